//! The OpenAPI 3.1 document, generated at start-up from the same descriptors as the routes: every annotated
//! operation with its path and query parameters, request and response schemas (enums as string enums, 64-bit
//! integers as strings, Timestamps as `date-time`), the proto comments as descriptions, `required`/`readOnly`
//! from `google.api.field_behavior`, the Bearer security scheme and the `google.rpc.Status` error schema.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::descriptors::{Comments, field_behavior};
use crate::routing::{BodyRule, Route, RouteTable, is_scalar_like};

const STATUS: &str = "google.rpc.Status";

/// Builds the document.
pub fn document(pool: &DescriptorPool, table: &RouteTable, version: &str) -> Json {
    let comments = Comments::new(pool);
    let mut generator = Generator { comments: &comments, schemas: BTreeMap::new(), pending: Vec::new() };
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut tags = BTreeSet::new();
    for route in table.routes() {
        let service = route.method.parent_service();
        tags.insert(service.name().to_owned());
        let operation = generator.operation(route);
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), Json::Object(operation));
    }
    generator.message_ref(&pool.get_message_by_name(STATUS).expect("google.rpc.Status is compiled in"));
    generator.drain();

    let tags: Vec<Json> = tags
        .into_iter()
        .map(|name| {
            let description = pool
                .services()
                .find(|s| s.name() == name)
                .and_then(|s| comments.get(s.parent_file().name(), s.path()).map(str::to_owned))
                .unwrap_or_default();
            json!({ "name": name, "description": description })
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "trading-monitor REST API",
            "version": version,
            "description": "Reconciliation of broker and platform positions, open-position P&L, and drawdown and \
                market guards. Generated from the service's protos (google.api.http annotations); the same \
                operations are available over gRPC. Every operation needs `Authorization: Bearer <JWT>`; \
                `me` as a user id means the caller. Errors are google.rpc.Status JSON with typed details.",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": generator.schemas,
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            },
            "responses": {
                "Error": {
                    "description": "An error: google.rpc.Status with typed details (ErrorInfo, BadRequest, RetryInfo, …).",
                    "content": { "application/json": { "schema": { "$ref": schema_ref(STATUS) } } },
                },
            },
        },
        "security": [{ "bearerAuth": [] }],
    })
}

fn schema_ref(full_name: &str) -> String {
    format!("#/components/schemas/{full_name}")
}

struct Generator<'a> {
    comments: &'a Comments,
    schemas: BTreeMap<String, Json>,
    pending: Vec<MessageDescriptor>,
}

impl Generator<'_> {
    fn operation(&mut self, route: &Route) -> Map<String, Json> {
        let method = &route.method;
        let mut op = Map::new();
        op.insert("operationId".into(), json!(route.operation_id()));
        op.insert("tags".into(), json!([method.parent_service().name()]));
        if let Some(text) = self.comments.get(method.parent_file().name(), method.path()) {
            let summary = text.split("\n\n").next().unwrap_or(text).replace('\n', " ");
            op.insert("summary".into(), json!(summary));
            op.insert("description".into(), json!(text));
        }
        let mut parameters = Vec::new();
        for (variable, chain) in route.template.variables().iter().zip(&route.path_fields) {
            let leaf = chain.last().expect("non-empty");
            let mut schema = self.field_schema(leaf);
            strip_read_only(&mut schema);
            let mut param = json!({
                "name": variable.field_path.join("."),
                "in": "path",
                "required": true,
                "schema": schema,
            });
            if let Some(d) = self.field_description(leaf) {
                param["description"] = json!(d);
            }
            parameters.push(param);
        }
        if route.body != BodyRule::Whole {
            let bound: Vec<String> = route.path_fields.iter().map(|c| dotted_proto(c)).collect();
            let mut query = Vec::new();
            self.query_parameters(&method.input(), ("", ""), &bound, route, 0, &mut query);
            parameters.extend(query);
        }
        if !parameters.is_empty() {
            op.insert("parameters".into(), Json::Array(parameters));
        }
        match &route.body {
            BodyRule::None => {}
            BodyRule::Whole => {
                op.insert("requestBody".into(), self.request_body(&method.input(), route));
            }
            BodyRule::Field(field) => {
                let schema = self.field_schema(field);
                op.insert(
                    "requestBody".into(),
                    json!({ "required": true, "content": { "application/json": { "schema": schema } } }),
                );
            }
        }
        let response_schema = match &route.response_body {
            None => json!({ "$ref": self.message_ref(&method.output()) }),
            Some(field) => self.field_schema(field),
        };
        let responses = if method.is_server_streaming() {
            streaming_responses(response_schema)
        } else {
            json!({
                "200": {
                    "description": "OK",
                    "content": { "application/json": { "schema": response_schema } },
                },
                "default": { "$ref": "#/components/responses/Error" },
            })
        };
        op.insert("responses".into(), responses);
        if method.is_server_streaming() {
            parameters_of(&mut op).extend([
                json!({
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": false,
                    "description": "Sent by a reconnecting EventSource: the resume token of the last event received \
                        (takes precedence over `resumeToken`).",
                    "schema": { "type": "string" },
                }),
                json!({
                    "name": crate::streaming::ACCESS_TOKEN,
                    "in": "query",
                    "required": false,
                    "description": "The bearer token, for clients that cannot send an Authorization header \
                        (EventSource); the header wins when both are present. URLs are logged by proxies: prefer \
                        the header.",
                    "schema": { "type": "string" },
                }),
            ]);
        }
        op
    }

    /// A whole-message body: the message's schema without the fields the path binds (grpc-gateway's generator
    /// leaves them out too; a body may still repeat them with the same value).
    fn request_body(&mut self, input: &MessageDescriptor, route: &Route) -> Json {
        let bound: Vec<String> =
            route.path_fields.iter().filter(|c| c.len() == 1).map(|c| c[0].json_name().to_owned()).collect();
        let schema = if bound.is_empty() {
            json!({ "$ref": self.message_ref(input) })
        } else {
            let mut schema = self.message_schema(input);
            if let Some(Json::Array(required)) = schema.get_mut("required") {
                required.retain(|r| !bound.iter().any(|b| r == b));
            }
            if let Some(Json::Object(properties)) = schema.get_mut("properties") {
                properties.retain(|name, _| !bound.contains(name));
            }
            schema
        };
        json!({ "required": true, "content": { "application/json": { "schema": schema } } })
    }

    fn query_parameters(
        &mut self,
        message: &MessageDescriptor,
        (proto_prefix, json_prefix): (&str, &str),
        bound: &[String],
        route: &Route,
        depth: usize,
        out: &mut Vec<Json>,
    ) {
        for field in message.fields() {
            let name = format!("{proto_prefix}{}", field.name());
            if bound.contains(&name) || field_behavior(&field).output_only || field.is_map() {
                continue;
            }
            if let BodyRule::Field(body) = &route.body
                && depth == 0
                && *body == field
            {
                continue;
            }
            if is_scalar_like(&field) {
                let mut schema = self.field_schema(&field);
                strip_read_only(&mut schema);
                let mut param = json!({
                    "name": format!("{json_prefix}{}", field.json_name()),
                    "in": "query",
                    "required": field_behavior(&field).required,
                    "schema": schema,
                });
                if field.is_list() {
                    param["explode"] = json!(true);
                    param["style"] = json!("form");
                }
                if let Some(d) = self.field_description(&field) {
                    param["description"] = json!(d);
                }
                out.push(param);
            } else if let Kind::Message(m) = field.kind()
                && !field.is_list()
                && depth < 4
            {
                let prefixes = (format!("{name}."), format!("{json_prefix}{}.", field.json_name()));
                self.query_parameters(&m, (&prefixes.0, &prefixes.1), bound, route, depth + 1, out);
            }
        }
    }

    fn message_ref(&mut self, message: &MessageDescriptor) -> String {
        let name = message.full_name().to_owned();
        if !self.schemas.contains_key(&name) && !self.pending.iter().any(|m| m.full_name() == name) {
            self.pending.push(message.clone());
            self.drain();
        }
        schema_ref(&name)
    }

    fn drain(&mut self) {
        while let Some(message) = self.pending.pop() {
            let name = message.full_name().to_owned();
            if self.schemas.contains_key(&name) {
                continue;
            }
            // Reserve the name first: recursive messages refer to themselves.
            self.schemas.insert(name.clone(), Json::Null);
            let schema = self.message_schema(&message);
            self.schemas.insert(name, schema);
        }
    }

    fn message_schema(&mut self, message: &MessageDescriptor) -> Json {
        if message.full_name() == "google.protobuf.Any" {
            return json!({
                "type": "object",
                "description": "A typed message: `@type` names it, the other members are its fields.",
                "properties": { "@type": { "type": "string" } },
                "required": ["@type"],
                "additionalProperties": true,
            });
        }
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let behavior = field_behavior(&field);
            let mut schema = self.field_schema(&field);
            if let Some(d) = self.field_description(&field) {
                schema["description"] = json!(d);
            }
            if behavior.required {
                required.push(json!(field.json_name()));
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({ "type": "object", "properties": properties, "additionalProperties": false });
        if !required.is_empty() {
            schema["required"] = Json::Array(required);
        }
        // At most one member of each oneof (proto3 `optional` fields are synthetic oneofs of one: skipped).
        let mut pairs = Vec::new();
        for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
            let names: Vec<String> = oneof.fields().map(|f| f.json_name().to_owned()).collect();
            for (i, a) in names.iter().enumerate() {
                for b in &names[i + 1..] {
                    pairs.push(json!({ "required": [a, b] }));
                }
            }
        }
        if !pairs.is_empty() {
            schema["not"] = json!({ "anyOf": pairs });
        }
        if let Some(d) = self.comments.get(message.parent_file().name(), message.path()) {
            schema["description"] = json!(d);
        }
        schema
    }

    fn field_description(&self, field: &FieldDescriptor) -> Option<String> {
        self.comments.get(field.parent_message().parent_file().name(), field.path()).map(str::to_owned)
    }

    /// The schema of one field's value (arrays for repeated fields, objects for maps).
    fn field_schema(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map()
            && let Kind::Message(entry) = field.kind()
        {
            let value = entry.map_entry_value_field();
            return json!({ "type": "object", "additionalProperties": self.kind_schema(&value) });
        }
        let item = self.kind_schema(field);
        let mut schema = if field.is_list() { json!({ "type": "array", "items": item }) } else { item };
        if field_behavior(field).output_only {
            schema["readOnly"] = json!(true);
        }
        schema
    }

    fn kind_schema(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::Double | Kind::Float => json!({ "type": "number" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer", "format": "int32" }),
            Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "format": "int64", "minimum": 0 }),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
            }
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "format": "byte" }),
            Kind::Enum(e) => self.enum_schema(&e),
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
                "google.protobuf.Duration" => json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$" }),
                "google.protobuf.FieldMask" => json!({ "type": "string" }),
                "google.protobuf.Struct" => json!({ "type": "object" }),
                "google.protobuf.Value" => json!({}),
                "google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
                _ => json!({ "$ref": self.message_ref(&m) }),
            },
        }
    }

    fn enum_schema(&mut self, e: &EnumDescriptor) -> Json {
        let values: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
        let mut schema = json!({ "type": "string", "enum": values });
        let mut description = self.comments.get(e.parent_file().name(), e.path()).unwrap_or_default().to_owned();
        for v in e.values() {
            if let Some(text) = self.comments.get(e.parent_file().name(), v.path()) {
                description.push_str(&format!("\n- `{}`: {}", v.name(), text.replace('\n', " ")));
            }
        }
        if !description.is_empty() {
            schema["description"] = json!(description.trim());
        }
        schema
    }
}

fn dotted_proto(chain: &[FieldDescriptor]) -> String {
    chain.iter().map(|f| f.name()).collect::<Vec<_>>().join(".")
}

fn strip_read_only(schema: &mut Json) {
    if let Json::Object(map) = schema {
        map.remove("readOnly");
    }
}

/// The parameter list of an operation (created if it has none).
fn parameters_of(op: &mut Map<String, Json>) -> &mut Vec<Json> {
    match op.entry("parameters").or_insert_with(|| Json::Array(Vec::new())) {
        Json::Array(list) => list,
        _ => unreachable!("parameters is always an array"),
    }
}

/// A server-streaming operation's responses: Server-Sent Events or newline-delimited JSON (see `streaming`).
fn streaming_responses(message: Json) -> Json {
    json!({
        "200": {
            "description": "A stream of messages until the client disconnects or the server ends it. With \
                `Accept: text/event-stream`, Server-Sent Events: `id:` the message's resume token, `event:` its \
                kind (`event`, `update`, `heartbeat`; `error` for a final error), `data:` the message as JSON \
                (for `error`, a google.rpc.Status). Otherwise newline-delimited JSON: one `{\"result\": message}` \
                per line and a final `{\"error\": status}` line if the stream ends with an error.",
            "content": {
                "text/event-stream": { "schema": { "type": "string" } },
                "application/x-ndjson": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "result": message,
                            "error": { "$ref": "#/components/schemas/google.rpc.Status" },
                        },
                    },
                },
            },
        },
        "410": {
            "description": "The resume token (or Last-Event-ID) cannot be resumed (reason RESUME_TOKEN_INVALID): \
                re-read the state and watch again without one.",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/google.rpc.Status" } } },
        },
        "default": { "$ref": "#/components/responses/Error" },
    })
}
