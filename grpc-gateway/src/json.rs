//! Canonical proto3 JSON both ways (through `prost-reflect`): a request message from the HTTP body, the path
//! variables and the query string; a response message to lowerCamelCase JSON with enums as names, 64-bit
//! integers as strings, Timestamps in RFC 3339 and unpopulated fields written out (grpc-gateway v2's default).
//!
//! Stricter than grpc-gateway on purpose: a body field or query parameter the message does not have is a 400
//! naming it, so a typo in `stopLoss` is never silently ignored.

use bytes::Bytes;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};
use serde_json::{Map, Value as Json};

use crate::errors::GatewayError;
use crate::routing::{BodyRule, Route, is_scalar_like, resolve_path};

/// Builds the RPC's request message from an HTTP request's parts.
pub fn request_message(
    route: &Route,
    path_values: &[String],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, GatewayError> {
    let input = route.method.input();
    let mut object = match &route.body {
        BodyRule::None => {
            if !body.iter().all(u8::is_ascii_whitespace) {
                return Err(GatewayError::field("", "this method takes no request body"));
            }
            Map::new()
        }
        BodyRule::Whole => match parse_body(body)? {
            Json::Object(map) => map,
            _ => return Err(GatewayError::field("", "the request body must be a JSON object")),
        },
        BodyRule::Field(field) => {
            let mut map = Map::new();
            map.insert(field.json_name().to_owned(), parse_body(body)?);
            map
        }
    };

    for (chain, raw) in route.path_fields.iter().zip(path_values) {
        let value =
            scalar_json(chain.last().expect("non-empty"), raw).map_err(|m| GatewayError::field(dotted(chain), m))?;
        set_path(&mut object, chain, value, true)?;
    }

    if let Some(query) = query.filter(|q| !q.is_empty()) {
        if route.body == BodyRule::Whole {
            return Err(GatewayError::field(
                "",
                "this method takes its whole request in the JSON body; query parameters are not accepted",
            ));
        }
        set_query(&mut object, route, &input, query)?;
    }

    let json = Json::Object(object);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&json, &mut track);
    DynamicMessage::deserialize_with_options(input, deserializer, &options).map_err(|e| {
        let path = track.path().to_string();
        GatewayError::BadRequest { field: Some(if path == "." { String::new() } else { path }), message: e.to_string() }
    })
}

/// Writes a response message (or its `response_body` field) as canonical JSON.
pub fn response_json(route: &Route, message: &DynamicMessage) -> Result<Bytes, GatewayError> {
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::new(&mut out);
    let result = match &route.response_body {
        None => message.serialize_with_options(&mut serializer, &options),
        Some(field) => match message.get_field(field).into_owned() {
            Value::Message(inner) => inner.serialize_with_options(&mut serializer, &options),
            _ => {
                // A scalar or repeated response_body: wrap it in a message holding only that field.
                let mut only = DynamicMessage::new(message.descriptor());
                only.set_field(field, message.get_field(field).into_owned());
                let json = only
                    .serialize_with_options(serde_json::value::Serializer, &options)
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                let inner = json.get(field.json_name()).cloned().unwrap_or(Json::Null);
                return serde_json::to_vec(&inner).map(Bytes::from).map_err(|e| GatewayError::Internal(e.to_string()));
            }
        },
    };
    result.map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(Bytes::from(out))
}

fn parse_body(body: &[u8]) -> Result<Json, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Object(Map::new()));
    }
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::field("", format!("the request body is not valid JSON: {e}")))
}

fn dotted(chain: &[FieldDescriptor]) -> String {
    chain.iter().map(|f| f.json_name()).collect::<Vec<_>>().join(".")
}

/// Sets `value` at the field chain in the JSON object, removing the other spelling of each key (proto name vs
/// JSON name) so the message has each field once. With `from_path`, a different value already in the body is
/// a conflict, not something to overwrite silently.
fn set_path(
    object: &mut Map<String, Json>,
    chain: &[FieldDescriptor],
    value: Json,
    from_path: bool,
) -> Result<(), GatewayError> {
    let (field, rest) = chain.split_first().expect("non-empty chain");
    let existing = object.remove(field.name()).or_else(|| object.remove(field.json_name()));
    if rest.is_empty() {
        if let Some(existing) = existing
            && from_path
            && existing != value
        {
            return Err(GatewayError::field(
                dotted(chain),
                "is bound by the URL path; the body may leave it out or repeat the same value",
            ));
        }
        object.insert(field.json_name().to_owned(), value);
        return Ok(());
    }
    let mut inner = match existing {
        Some(Json::Object(map)) => map,
        Some(Json::Null) | None => Map::new(),
        Some(_) => return Err(GatewayError::field(field.json_name(), "must be a JSON object")),
    };
    set_path(&mut inner, rest, value, from_path)?;
    object.insert(field.json_name().to_owned(), Json::Object(inner));
    Ok(())
}

/// Query parameters: `field=value`, `parent.child=value` for nested fields, a repeated key for a repeated field.
fn set_query(
    object: &mut Map<String, Json>,
    route: &Route,
    input: &MessageDescriptor,
    query: &str,
) -> Result<(), GatewayError> {
    let mut lists: Vec<(Vec<FieldDescriptor>, Vec<Json>)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (key, raw) in form_urlencoded::parse(query.as_bytes()) {
        // Accept both spellings: `pageSize` and `page_size`, `a.b` with either form per part.
        let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
        let chain = resolve_query_path(input, &parts).map_err(|m| GatewayError::field(key.to_string(), m))?;
        let name = dotted(&chain);
        if route.path_fields.iter().any(|p| dotted(p) == name) {
            return Err(GatewayError::field(name, "is bound by the URL path and cannot also be a query parameter"));
        }
        if let BodyRule::Field(body) = &route.body
            && chain[0] == *body
        {
            return Err(GatewayError::field(name, "is carried by the request body"));
        }
        let leaf = chain.last().expect("non-empty");
        if leaf.is_map() || !is_scalar_like(leaf) {
            return Err(GatewayError::field(name, "cannot be set from a query parameter (it is a message or a map)"));
        }
        let value = scalar_json(leaf, &raw).map_err(|m| GatewayError::field(name.clone(), m))?;
        if leaf.is_list() {
            match lists.iter_mut().find(|(c, _)| *c == chain) {
                Some((_, values)) => values.push(value),
                None => lists.push((chain, vec![value])),
            }
        } else {
            if seen.contains(&name) {
                return Err(GatewayError::field(name, "is given more than once but is not a repeated field"));
            }
            seen.push(name);
            set_path(object, &chain, value, false)?;
        }
    }
    for (chain, values) in lists {
        set_path(object, &chain, Json::Array(values), false)?;
    }
    Ok(())
}

fn resolve_query_path(input: &MessageDescriptor, parts: &[String]) -> Result<Vec<FieldDescriptor>, String> {
    // Map JSON names to proto names part by part, then resolve.
    let mut names = Vec::with_capacity(parts.len());
    let mut current = input.clone();
    for (i, part) in parts.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| format!("unknown query parameter: {} has no field {part:?}", current.full_name()))?;
        names.push(field.name().to_owned());
        if i + 1 < parts.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => current = m,
                _ => return Err(format!("{part} has no sub-fields")),
            }
        }
    }
    resolve_path(input, &names)
}

/// The JSON value a path or query string stands for, given the field's type. Strings stay strings (proto3 JSON
/// accepts numbers and 64-bit integers as strings); booleans and enum numbers are converted.
fn scalar_json(field: &FieldDescriptor, raw: &str) -> Result<Json, String> {
    match field.kind() {
        Kind::Bool => scalar_bool(raw),
        Kind::Enum(e) => match raw.parse::<i32>() {
            Ok(n) => Ok(Json::from(n)),
            Err(_) if e.get_value_by_name(raw).is_some() => Ok(Json::String(raw.to_owned())),
            Err(_) => Err(format!(
                "unknown value {raw:?}; expected one of {}",
                e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>().join(", ")
            )),
        },
        Kind::Message(m) if m.full_name() == "google.protobuf.BoolValue" => scalar_bool(raw),
        _ => Ok(Json::String(raw.to_owned())),
    }
}

fn scalar_bool(raw: &str) -> Result<Json, String> {
    match raw {
        "true" => Ok(Json::Bool(true)),
        "false" => Ok(Json::Bool(false)),
        _ => Err(format!("expected true or false, got {raw:?}")),
    }
}
