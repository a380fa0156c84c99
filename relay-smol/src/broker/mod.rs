//! Broker: local subscriptions, fan-out, delivery modes, per-subscriber bounded queues.
