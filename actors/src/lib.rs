//! The actix runtime and the embedding API (DESIGN §6). Not built yet: see issue 6.
