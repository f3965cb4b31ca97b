//! ferry's sms transport (work in progress).
