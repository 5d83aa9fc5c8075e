//! The codec that carries a polled resource's first value from the server's
//! HTML to the browser: JSON, read the same way server functions read it.
//!
//! Leptos's default resource codec reads JSON from a `&str` and server
//! functions read it from bytes. serde_json compiles its whole deserializer
//! once per input kind, so the default made the browser carry two copies of
//! every `Job`, `ListResponse` and `JobDetail` parser. Reading from bytes
//! here shares the copy the server functions already need.

use crate::error::AppError;
use leptos::prelude::Resource;
use leptos::server::codee::{Decoder, Encoder};
use serde::{de::DeserializeOwned, Serialize};

/// JSON via `serde_json::from_slice`, like the server functions' `Json` codec.
pub struct JsonAsBytes;

impl<T: Serialize> Encoder<T> for JsonAsBytes {
    type Error = serde_json::Error;
    type Encoded = String;

    fn encode(value: &T) -> Result<String, serde_json::Error> {
        serde_json::to_string(value)
    }
}

impl<T: DeserializeOwned> Decoder<T> for JsonAsBytes {
    type Error = serde_json::Error;
    type Encoded = str;

    fn decode(text: &str) -> Result<T, serde_json::Error> {
        serde_json::from_slice(text.as_bytes())
    }
}

/// A resource fed by a server function, re-fetched whenever `source` changes.
pub type PolledResource<T> = Resource<Result<T, AppError>, JsonAsBytes>;
