//! ferry's email transport (work in progress).
