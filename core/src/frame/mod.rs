//! LLPS v0.1 client frame codec: publish v1/v2 and text commands in, deliver frames and replies out.
