//! Custom resources (apiextensions.k8s.io/v1 CustomResourceDefinitions): a
//! definition, once its names are accepted, makes the server serve its versions as
//! resources of their own — stored, watched, validated against their structural
//! schema, defaulted and pruned, with status and scale subresources, printer
//! columns, discovery and OpenAPI — as kube-apiextensions-apiserver does.
//!
//! - [`custom`]: what the resource table knows of a custom resource (types only);
//! - [`registry`]: the table's custom part, following the definitions in the hub;
//! - [`definition`]: a definition's defaults and validation, with [`structural`]
//!   for its schemas;
//! - [`values`]: objects against a schema (pruning, defaulting, validation), with
//!   [`cel`] for its `x-kubernetes-validations` rules;
//! - [`openapi`]: the schemas published for `kubectl explain`;
//! - [`versions`]: served versions other than the storage version;
//! - [`controller`]: definitions' status, and their objects removed on deletion.

pub mod cel;
pub mod controller;
pub mod custom;
pub mod definition;
pub mod openapi;
pub mod registry;
pub mod structural;
pub mod values;
pub mod versions;
