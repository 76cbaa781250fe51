//! Windows (SPEC 1 and 3): the window kinds and their state, one file each
//! ([`tumbling`], [`hopping`] with its [`tiles`], [`session`]), and the
//! processing-time [`trigger`] ticks. The engine ties keys, windows and
//! panes together and calls into these; nothing here knows the engine.

pub mod hopping;
pub mod session;
pub mod tiles;
pub mod trigger;
pub mod tumbling;

pub use session::sessions_meet;
pub use tumbling::{tumbling_start, LastTumbling};
