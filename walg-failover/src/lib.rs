//! walg-failover
