//! How an object in a model changed: the one word every source's events share.

/// How an object in a model changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Change {
    /// It appeared.
    Added,
    /// It was there and some attribute differs now.
    Changed,
    /// It is gone.
    Removed,
}
