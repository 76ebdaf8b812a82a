//! Placeholder: this crate is built out by its own issue; see the README's status table.
