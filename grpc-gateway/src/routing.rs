//! The route table: one route per `google.api.http` binding (including `additional_bindings`) of every RPC in the
//! descriptor set, built at start-up, so an annotated RPC added to the protos needs no gateway code.

use http::Method;
use http::uri::PathAndQuery;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
};

use crate::template::Template;

/// What the HTTP body maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: every field not bound by the path is a query parameter.
    None,
    /// `body: "*"`: the body is the whole request message (fields bound by the path excepted).
    Whole,
    /// `body: "field"`: the body is that (top-level) field; the other fields are query parameters.
    Field(FieldDescriptor),
}

/// One HTTP binding of one RPC.
#[derive(Clone, Debug)]
pub struct Route {
    /// The HTTP method.
    pub http_method: Method,
    /// The path template.
    pub template: Template,
    /// The RPC.
    pub method: MethodDescriptor,
    /// The fields bound by the template's variables, in order, each as the chain of fields from the request.
    pub path_fields: Vec<Vec<FieldDescriptor>>,
    /// Where the request body goes.
    pub body: BodyRule,
    /// `response_body: "field"`: only that field of the response is written out.
    pub response_body: Option<FieldDescriptor>,
    /// The RPC's HTTP/2 path, `/trading.v1.PositionsService/ListOpenPositions` (built once, used per call).
    pub grpc_path: PathAndQuery,
}

impl Route {
    /// `PositionsService_ListOpenPositions` (the operation id grpc-gateway's OpenAPI generator uses).
    pub fn operation_id(&self) -> String {
        format!("{}_{}", self.method.parent_service().name(), self.method.name())
    }
}

/// Why the route table cannot be built (a contract error: the gateway refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The contract lacks the `google.api.http` option itself.
    #[error("the descriptor set has no google.api.http extension (google/api/annotations.proto is missing)")]
    NoHttpExtension,
    /// An RPC's path template does not parse.
    #[error("{method}: {source}")]
    Template {
        /// The RPC.
        method: String,
        /// What is wrong with its template.
        source: crate::template::TemplateError,
    },
    /// An RPC's binding names fields that do not fit.
    #[error("{method}: {why}")]
    Binding {
        /// The RPC.
        method: String,
        /// What does not fit.
        why: String,
    },
}

/// The result of looking a request up.
pub enum Lookup<'a> {
    /// This route, with the path variables' values in order.
    Found(&'a Route, Vec<String>),
    /// The path exists with other methods.
    MethodNotAllowed(Vec<Method>),
    /// No route has this path.
    NotFound,
}

/// Every route of the descriptor set.
#[derive(Clone, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table from every service in `pool` (unannotated RPCs get no route).
    pub fn from_pool(pool: &DescriptorPool) -> Result<RouteTable, RouteError> {
        let http = pool.get_extension_by_name("google.api.http").ok_or(RouteError::NoHttpExtension)?;
        let mut routes = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&http).into_owned() else { continue };
                add_rule(&mut routes, &method, &rule, true)?;
            }
        }
        Ok(RouteTable { routes })
    }

    /// All routes, in descriptor order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for `method` and `path` (the raw path, without the query).
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut best: Option<(&Route, Vec<String>)> = None;
        let mut other_methods = Vec::new();
        for route in &self.routes {
            let Some(values) = route.template.matches(path) else { continue };
            // HEAD is answered like GET without a body.
            let same = route.http_method == method || (method == Method::HEAD && route.http_method == Method::GET);
            if !same {
                if !other_methods.contains(&route.http_method) {
                    other_methods.push(route.http_method.clone());
                }
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| route.template.literal_count() > b.template.literal_count()) {
                best = Some((route, values));
            }
        }
        match best {
            Some((route, values)) => Lookup::Found(route, values),
            None if !other_methods.is_empty() => Lookup::MethodNotAllowed(other_methods),
            None => Lookup::NotFound,
        }
    }
}

fn add_rule(
    routes: &mut Vec<Route>,
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    top: bool,
) -> Result<(), RouteError> {
    let name = method.full_name().to_owned();
    let fail = |why: String| RouteError::Binding { method: name.clone(), why };
    let text = |field: &str| match rule.get_field_by_name(field).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let mut pattern = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        if rule.has_field_by_name(verb) {
            pattern =
                Some((Method::from_bytes(verb.to_ascii_uppercase().as_bytes()).expect("valid method"), text(verb)));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
    {
        let kind = match custom.get_field_by_name("kind").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let path = match custom.get_field_by_name("path").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let http_method =
            Method::from_bytes(kind.as_bytes()).map_err(|_| fail(format!("invalid custom method {kind:?}")))?;
        pattern = Some((http_method, path));
    }
    let Some((http_method, path)) = pattern else {
        return Err(fail("a google.api.http rule without a pattern".into()));
    };
    let template = Template::parse(&path).map_err(|source| RouteError::Template { method: name.clone(), source })?;
    let input = method.input();
    let mut path_fields = Vec::new();
    for variable in template.variables() {
        let chain = resolve_path(&input, &variable.field_path).map_err(&fail)?;
        let leaf = chain.last().expect("non-empty chain");
        if leaf.is_list() || leaf.is_map() || (matches!(leaf.kind(), Kind::Message(_)) && !is_scalar_like(leaf)) {
            return Err(fail(format!(
                "path variable {} must bind a singular scalar field",
                variable.field_path.join(".")
            )));
        }
        path_fields.push(chain);
    }
    let body = match text("body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        field => BodyRule::Field(
            input.get_field_by_name(field).ok_or_else(|| fail(format!("body names an unknown field {field:?}")))?,
        ),
    };
    let response_body = match text("response_body").as_str() {
        "" => None,
        field => Some(
            method
                .output()
                .get_field_by_name(field)
                .ok_or_else(|| fail(format!("response_body names an unknown field {field:?}")))?,
        ),
    };
    let grpc_path = PathAndQuery::try_from(format!("/{}/{}", method.parent_service().full_name(), method.name()))
        .map_err(|e| fail(format!("no valid gRPC path: {e}")))?;
    routes.push(Route { http_method, template, method: method.clone(), path_fields, body, response_body, grpc_path });
    if top && let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
        for binding in more {
            if let Value::Message(binding) = binding {
                add_rule(routes, method, binding, false)?;
            }
        }
    }
    Ok(())
}

/// Resolves a dotted field path (proto names) to the chain of fields it walks through.
pub fn resolve_path(message: &MessageDescriptor, path: &[String]) -> Result<Vec<FieldDescriptor>, String> {
    let mut chain = Vec::with_capacity(path.len());
    let mut current = message.clone();
    for (i, part) in path.iter().enumerate() {
        let field =
            current.get_field_by_name(part).ok_or_else(|| format!("{} has no field {part:?}", current.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => current = m,
                _ => return Err(format!("{part} is not a singular message field")),
            }
        }
        chain.push(field);
    }
    Ok(chain)
}

/// Well-known types written as one JSON string (so they can be set from a path or query value).
pub fn is_scalar_like(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => matches!(
            m.full_name(),
            "google.protobuf.Timestamp"
                | "google.protobuf.Duration"
                | "google.protobuf.FieldMask"
                | "google.protobuf.StringValue"
                | "google.protobuf.BytesValue"
                | "google.protobuf.BoolValue"
                | "google.protobuf.Int32Value"
                | "google.protobuf.Int64Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.UInt64Value"
                | "google.protobuf.FloatValue"
                | "google.protobuf.DoubleValue"
        ),
        _ => true,
    }
}
