//! Path templates of `google.api.http` (the grammar in `google/api/http.proto`), parsed once and matched against
//! request paths:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{field}` is short for `{field=*}`. `**` matches zero or more segments and may only come last. A variable that
//! matches one segment gets that segment percent-decoded; one that matches several keeps its `/` separators and
//! percent-decodes each segment except `%2F` (as the grammar's "reserved expansion" says).

use std::fmt;

use percent_encoding::percent_decode_str;

/// One piece of a compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    One,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A variable: the field path it binds and the range of segments it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The request field it sets, as written (`user_id`, `parent.name`).
    pub field_path: Vec<String>,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    source: String,
}

/// Why a template does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid path template {template:?}: {why}")]
pub struct TemplateError {
    template: String,
    why: &'static str,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    /// Parses `template` (for example `/v1/users/{user_id}/brokerSyncs:submit`).
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        let fail = |why| TemplateError { template: template.to_owned(), why };
        let rest = template.strip_prefix('/').ok_or_else(|| fail("must start with '/'"))?;
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}', '*'])) {
            return Err(fail("the custom verb must be a literal"));
        }
        let mut parser = Parser { input: path.as_bytes(), pos: 0, segments: Vec::new(), variables: Vec::new() };
        parser.segments_until(None, false).map_err(fail)?;
        if parser.pos != parser.input.len() {
            return Err(fail("unexpected character"));
        }
        let Parser { segments, variables, .. } = parser;
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(fail("'**' may only be the last segment"));
        }
        Ok(Template { segments, variables, verb: verb.map(str::to_owned), source: template.to_owned() })
    }

    /// The variables, in the order they appear.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// How many literal segments it has: a more literal template wins when two match.
    pub fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count() + usize::from(self.verb.is_some())
    }

    /// The template as OpenAPI writes paths: each variable as `{field.path}`, the verb kept.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(var) = self.variables.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&var.field_path.join("."));
                out.push('}');
                i = var.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => out.push_str(l),
                Segment::One => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            i += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// Matches a request path (as received, still percent-encoded, without the query). On a match, returns each
    /// variable's decoded value in the order of [`Template::variables`].
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => {
                let stem = rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
                if stem.ends_with('/') {
                    return None;
                }
                stem
            }
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        // starts[i] = index of the first path part matched by segment i.
        let mut starts = Vec::with_capacity(self.segments.len() + 1);
        let mut j = 0;
        for segment in &self.segments {
            starts.push(j);
            match segment {
                Segment::Literal(l) => {
                    if parts.get(j).map(|p| decode(p)) != Some(l.clone()) {
                        return None;
                    }
                    j += 1;
                }
                Segment::One => {
                    if parts.get(j).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    j += 1;
                }
                Segment::Rest => j = parts.len(),
            }
        }
        starts.push(j);
        if j != parts.len() {
            return None;
        }
        let values = self
            .variables
            .iter()
            .map(|v| {
                let covered = &parts[starts[v.start]..starts[v.end]];
                if covered.len() == 1 {
                    decode(covered[0])
                } else {
                    covered.iter().map(|p| decode_reserved(p)).collect::<Vec<_>>().join("/")
                }
            })
            .collect();
        Some(values)
    }
}

/// Splits `path:verb` at the last ':' that is outside braces and after the last '/'.
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut split = None;
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => split = None,
            ':' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    match split {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

impl Parser<'_> {
    /// Parses `Segment { "/" Segment }`, stopping before `stop` (the closing brace of a variable) or at the end.
    fn segments_until(&mut self, stop: Option<u8>, in_variable: bool) -> Result<(), &'static str> {
        loop {
            self.segment(in_variable)?;
            match self.input.get(self.pos) {
                Some(b'/') => self.pos += 1,
                Some(c) if Some(*c) == stop => return Ok(()),
                None if stop.is_none() => return Ok(()),
                None => return Err("unclosed '{'"),
                Some(_) => return Err("unexpected character"),
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), &'static str> {
        let rest = &self.input[self.pos..];
        if rest.starts_with(b"**") {
            self.pos += 2;
            self.segments.push(Segment::Rest);
        } else if rest.starts_with(b"*") {
            self.pos += 1;
            self.segments.push(Segment::One);
        } else if rest.starts_with(b"{") {
            if in_variable {
                return Err("variables cannot nest");
            }
            self.pos += 1;
            let name_end = self.input[self.pos..]
                .iter()
                .position(|c| matches!(c, b'=' | b'}'))
                .map(|n| self.pos + n)
                .ok_or("unclosed '{'")?;
            let name = std::str::from_utf8(&self.input[self.pos..name_end]).map_err(|_| "non-UTF-8 field path")?;
            let field_path: Vec<String> = name.split('.').map(str::to_owned).collect();
            if field_path.iter().any(|p| !is_ident(p)) {
                return Err("a variable must name a field path (identifiers separated by '.')");
            }
            self.pos = name_end;
            let start = self.segments.len();
            if self.input[self.pos] == b'=' {
                self.pos += 1;
                self.segments_until(Some(b'}'), true)?;
            } else {
                self.segments.push(Segment::One);
            }
            self.pos += 1; // '}'
            self.variables.push(Variable { field_path, start, end: self.segments.len() });
        } else {
            let end = rest.iter().position(|c| matches!(c, b'/' | b'{' | b'}' | b'*')).unwrap_or(rest.len());
            if end == 0 {
                return Err("empty segment");
            }
            let literal = std::str::from_utf8(&rest[..end]).map_err(|_| "non-UTF-8 literal")?;
            self.pos += end;
            self.segments.push(Segment::Literal(literal.to_owned()));
        }
        Ok(())
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn decode(part: &str) -> String {
    percent_decode_str(part).decode_utf8_lossy().into_owned()
}

/// Decodes everything except an encoded '/', which stays `%2F` inside a multi-segment value.
fn decode_reserved(part: &str) -> String {
    part.split("%2F").flat_map(|p| p.split("%2f")).map(decode).collect::<Vec<_>>().join("%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &Template) -> Vec<String> {
        t.variables().iter().map(|v| v.field_path.join(".")).collect()
    }

    #[test]
    fn simple_variables_and_literals() {
        let t = Template::parse("/v1/users/{user_id}/positions/{position_id}").unwrap();
        assert_eq!(vars(&t), ["user_id", "position_id"]);
        assert_eq!(t.matches("/v1/users/me/positions/p%201"), Some(vec!["me".into(), "p 1".into()]));
        assert_eq!(t.matches("/v1/users/me/positions"), None);
        assert_eq!(t.matches("/v1/users/me/positions/"), None);
        assert_eq!(t.matches("/v1/users/me/positions/a/b"), None);
        assert_eq!(t.matches("/v2/users/me/positions/a"), None);
        assert_eq!(t.openapi_path(), "/v1/users/{user_id}/positions/{position_id}");
        assert_eq!(t.literal_count(), 3);
    }

    #[test]
    fn custom_verbs() {
        let t = Template::parse("/v1/users/{user_id}/brokerSyncs:submit").unwrap();
        assert_eq!(t.matches("/v1/users/u1/brokerSyncs:submit"), Some(vec!["u1".into()]));
        assert_eq!(t.matches("/v1/users/u1/brokerSyncs"), None);
        assert_eq!(t.matches("/v1/users/u1/brokerSyncs:cancel"), None);
        let q = Template::parse("/v1/quotes:submit").unwrap();
        assert_eq!(q.matches("/v1/quotes:submit"), Some(vec![]));
        assert_eq!(q.matches("/v1/quotes"), None);
        assert_eq!(q.openapi_path(), "/v1/quotes:submit");
        // A verb right after a variable: the variable's value may not swallow it.
        let v = Template::parse("/v1/{name}:undelete").unwrap();
        assert_eq!(v.matches("/v1/a:b:undelete"), Some(vec!["a:b".into()]));
    }

    #[test]
    fn multi_segment_variables_and_wildcards() {
        let t = Template::parse("/v1/{name=shelves/*/books/*}").unwrap();
        assert_eq!(t.matches("/v1/shelves/s1/books/b%2F2"), Some(vec!["shelves/s1/books/b%2F2".into()]));
        assert_eq!(t.matches("/v1/shelves/s1/books"), None);
        assert_eq!(t.openapi_path(), "/v1/{name}");
        let r = Template::parse("/v1/files/{path=**}").unwrap();
        assert_eq!(r.matches("/v1/files/a/b/c"), Some(vec!["a/b/c".into()]));
        assert_eq!(r.matches("/v1/files"), Some(vec![String::new()]));
        let w = Template::parse("/v1/*/x/{a.b}").unwrap();
        assert_eq!(vars(&w), ["a.b"]);
        assert_eq!(w.matches("/v1/any/x/1"), Some(vec!["1".into()]));
        assert_eq!(w.matches("/v1//x/1"), None);
    }

    #[test]
    fn invalid_templates_are_refused() {
        for bad in ["v1/x", "/v1/{x", "/v1/{x=**}/y", "/v1/{a={b}}", "/v1//x", "/v1/{1x}", "/v1/x:", "/v1/{}"] {
            assert!(Template::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
