//! ferry's serial transport (work in progress).
