/**
 * A bounded queue for one subscription's async iterator. Policy when full: drop the OLDEST
 * message (a live feed is worth more fresh than complete) and count it in `dropped`.
 * @module
 */

/** Counters of one subscription queue. */
export interface QueueStats {
  /** Messages handed to this subscription. */
  received: number;
  /** Messages dropped because the queue was full (oldest first). */
  dropped: number;
  /** Messages waiting to be read now. */
  queued: number;
  /** The bound. */
  capacity: number;
}

export class BoundedQueue<T> {
  #items: (T | undefined)[];
  #head = 0;
  #len = 0;
  #waiter: ((r: IteratorResult<T>) => void) | undefined;
  #failWaiter: ((e: unknown) => void) | undefined;
  #ended = false;
  #error: unknown = undefined;
  /** Messages dropped because the queue was full. */
  dropped = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity must be a positive integer, got ${capacity}`);
    this.#items = new Array(capacity);
  }

  get length(): number {
    return this.#len;
  }

  /** Adds a value (a waiting reader gets it at once); when full, drops the oldest first. */
  push(v: T): void {
    if (this.#ended) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = this.#failWaiter = undefined;
      w({ value: v, done: false });
      return;
    }
    if (this.#len === this.capacity) {
      this.#items[this.#head] = undefined;
      this.#head = (this.#head + 1) % this.capacity;
      this.#len--;
      this.dropped++;
    }
    this.#items[(this.#head + this.#len) % this.capacity] = v;
    this.#len++;
  }

  /** Ends the queue: readers get what is queued, then done (or `error` thrown). */
  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (this.#waiter && this.#len === 0) {
      const w = this.#waiter;
      const f = this.#failWaiter;
      this.#waiter = this.#failWaiter = undefined;
      this.#error = undefined; // thrown once; later reads are just done
      if (error !== undefined) f!(error);
      else w({ value: undefined, done: true });
    }
  }

  /** Next value, waiting if none is queued. */
  next(): Promise<IteratorResult<T>> {
    if (this.#len > 0) {
      const v = this.#items[this.#head] as T;
      this.#items[this.#head] = undefined;
      this.#head = (this.#head + 1) % this.capacity;
      this.#len--;
      return Promise.resolve({ value: v, done: false });
    }
    if (this.#ended) {
      if (this.#error !== undefined) {
        const e = this.#error;
        this.#error = undefined; // thrown once; later reads are just done
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiter) return Promise.reject(new Error('a subscription can be read by one reader at a time'));
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#failWaiter = reject;
    });
  }
}
