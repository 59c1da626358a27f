//! The machinery the scenarios and benches stand on: PostgreSQL clusters
//! ([`pg`]) of the system's server or of another major version
//! ([`pg_versions`]), the storage emulators ([`emulators`]), the shaping and failing
//! TCP proxy ([`proxy`]), fake cloud identity services ([`identity`]), what a
//! fresh machine needs installed ([`setup`]) and the release packaging
//! ([`dist`]).
//!
//! Nothing here knows a scenario or asserts walg's behaviour: a module of
//! `infra` starts, stops, installs and builds, and returns an error that says
//! what is missing and how to get it.

pub mod dist;
pub mod emulators;
pub mod identity;
pub mod pg;
pub mod pg_versions;
pub mod proxy;
pub mod setup;
