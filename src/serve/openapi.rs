//! The OpenAPI 3.1 document of the HTTP API (`/openapi.json`).

use serde_json::{json, Value};

use super::registry::Registry;

/// The document, with the feature names this server knows as an example list.
pub fn document(reg: &Registry) -> Value {
    let names: Vec<String> = reg
        .pipelines()
        .iter()
        .flat_map(|p| {
            std::iter::once(format!("{}:*", p.name))
                .chain(
                    p.features
                        .iter()
                        .map(move |f| format!("{}:{}", p.name, f.name)),
                )
                .chain(
                    p.on_read
                        .iter()
                        .map(move |f| format!("{}:{}", p.name, f.name)),
                )
        })
        .collect();
    // Request-time features: computed when read, from the group's stored values.
    let on_read: serde_json::Map<String, Value> = reg
        .pipelines()
        .iter()
        .flat_map(|p| {
            p.on_read.iter().map(move |f| {
                (
                    format!("{}:{}", p.name, f.name),
                    json!({ "expression": f.expr.to_string(), "now": "the request time, in milliseconds since the epoch", "description": f.description }),
                )
            })
        })
        .collect();
    let error = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
      "openapi": "3.1.0",
      "info": {
        "title": "rill online feature API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Read the latest feature values of entities, browse the feature registry and check freshness."
      },
      "paths": {
        "/v1/features": {
          "post": {
            "summary": "Feature values of entities",
            "description": "One Redis round trip per request for any number of entities and groups. Status: present, missing (no value; the feature's default if it declares one), expired (older than max_age, the group's max_age or its ttl; the default if declared). Request-time features (on_read, listed in x-on-read-features) are computed from the group's stored values with now = the request time; a collect_set is a list of strings.",
            "x-on-read-features": on_read,
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/FeaturesRequest" } } } },
            "responses": {
              "200": { "description": "values", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/FeaturesResponse" } } } },
              "400": error, "404": error, "413": error, "503": error
            }
          },
          "get": {
            "summary": "Feature values of one entity",
            "parameters": [
              { "name": "features", "in": "query", "required": true, "description": "group:feature or group:*, comma-separated or repeated", "schema": { "type": "string" } },
              { "name": "max_age", "in": "query", "required": false, "schema": { "type": "string", "examples": ["10m"] } }
            ],
            "description": "Every other query parameter is a key field of the entity, e.g. ?user_id=u1.",
            "responses": {
              "200": { "description": "values", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/FeaturesResponse" } } } },
              "400": error, "404": error, "503": error
            }
          }
        },
        "/v1/freshness": { "get": { "summary": "Freshness of every pipeline", "responses": { "200": { "description": "freshness", "content": { "application/json": { "schema": { "type": "object", "properties": { "pipelines": { "type": "array", "items": { "$ref": "#/components/schemas/Freshness" } } } } } } } } } },
        "/v1/freshness/{group}": { "get": { "summary": "Freshness of one pipeline", "parameters": [ { "name": "group", "in": "path", "required": true, "schema": { "type": "string" } } ], "responses": { "200": { "description": "freshness", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Freshness" } } } }, "404": error } } },
        "/v1/registry": { "get": { "summary": "Every feature group", "responses": { "200": { "description": "groups" } } } },
        "/v1/registry/{target}": { "get": { "summary": "One group (GROUP) or feature (GROUP:FEATURE)", "parameters": [ { "name": "target", "in": "path", "required": true, "schema": { "type": "string" } } ], "responses": { "200": { "description": "entry" }, "404": error } } },
        "/v1/lineage/{target}": { "get": { "summary": "Lineage from topic to pipeline to features to derived features and sinks", "parameters": [ { "name": "target", "in": "path", "required": true, "schema": { "type": "string" } } ], "responses": { "200": { "description": "graph" }, "404": error } } },
        "/v1/search": { "get": { "summary": "Search groups and features", "parameters": [ { "name": "q", "in": "query", "required": true, "schema": { "type": "string" } } ], "responses": { "200": { "description": "hits, best first" } } } }
      },
      "components": {
        "schemas": {
          "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
          "FeaturesRequest": {
            "type": "object", "required": ["entities", "features"], "additionalProperties": false,
            "properties": {
              "entities": { "type": "array", "items": { "type": "object", "additionalProperties": { "type": ["string", "integer"] } }, "examples": [[{ "user_id": "u1" }]] },
              "features": { "type": "array", "items": { "type": "string", "examples": names } },
              "max_age": { "type": ["string", "number"], "description": "a duration such as 10m, or seconds" }
            }
          },
          "FeatureValue": {
            "type": "object",
            "properties": {
              "value": {},
              "status": { "type": "string", "enum": ["present", "missing", "expired"] },
              "window_start": { "type": ["string", "null"], "format": "date-time" },
              "window_end": { "type": ["string", "null"], "format": "date-time" },
              "emitted_at": { "type": ["string", "null"], "format": "date-time" },
              "age_seconds": { "type": ["number", "null"] }
            }
          },
          "FeaturesResponse": {
            "type": "object",
            "properties": {
              "features": { "type": "array", "items": { "type": "string" } },
              "results": { "type": "array", "items": { "type": "object", "properties": {
                "entity": { "type": "object" },
                "features": { "type": "object", "additionalProperties": { "$ref": "#/components/schemas/FeatureValue" } }
              } } }
            }
          },
          "Freshness": {
            "type": "object",
            "properties": {
              "pipeline": { "type": "string" },
              "status": { "type": "string", "enum": ["fresh", "late", "unknown"] },
              "sla_seconds": { "type": ["number", "null"] },
              "sla_holds": { "type": ["boolean", "null"] },
              "watermark": { "type": ["string", "null"] },
              "watermark_lag_seconds": { "type": ["number", "null"] },
              "seconds_since_online_write": { "type": ["number", "null"] },
              "seconds_since_offline_write": { "type": ["number", "null"] },
              "consumer_lag": { "type": ["integer", "null"] },
              "reported_at": { "type": ["string", "null"] },
              "evaluated_at": { "type": "string" }
            }
          }
        }
      }
    })
}
