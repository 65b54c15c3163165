//! One module per command; each parses its arguments and calls a library.

pub mod container;
pub mod deploy_common;
pub mod diff;
pub mod finalize;
pub mod fleet;
pub mod fsck;
pub mod gc;
pub mod health;
pub mod image;
pub mod image_list;
pub mod image_mount;
pub mod image_pull;
pub mod image_rm;
pub mod install;
pub mod pin;
pub mod rollback;
pub mod status;
pub mod switch;
pub mod upgrade;
