//! Access tickets: format, verification into fixed-size claims, grant checks, status table.
