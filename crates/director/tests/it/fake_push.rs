//! The local push service lives in the workspace's testkit.

pub(crate) use davpush_testkit::fake_push::FakePush;
