//! walg-storage
