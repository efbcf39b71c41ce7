//! Templates over document properties: `{as2_from}/{file_name}`.
//! `{{` and `}}` are literal braces. Parsed once at deploy, so a typo in a
//! bundle is refused then; property names are resolved per document.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Property(String),
}

/// One part of a template, for renderers that escape by position (URLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text (`{{`/`}}` already turned into braces).
    Text(&'a str),
    /// A `{property}` by name.
    Property(&'a str),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{' at byte {0}")]
    Unclosed(usize),
    #[error("'}}' without '{{' at byte {0} (write '}}}}' for a literal brace)")]
    StrayClose(usize),
    #[error("empty or invalid property name {0:?} (letters, digits, '_', '.', '-')")]
    BadName(String),
    #[error("the document has no property {0:?}")]
    Missing(String),
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(TemplateError::StrayClose(at)),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, ch)) => name.push(ch),
                            None => return Err(TemplateError::Unclosed(at)),
                        }
                    }
                    let name = name.trim().to_string();
                    let valid = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                    if !valid {
                        return Err(TemplateError::BadName(name));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Property(name));
                }
                other => text.push(other),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// Fills in the properties; `escape` is applied to every property value
    /// (not to the template's own text).
    pub fn render<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str>,
        escape: impl Fn(&str) -> String,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Property(name) => {
                    let value = lookup(name).ok_or_else(|| TemplateError::Missing(name.clone()))?;
                    out.push_str(&escape(value));
                }
            }
        }
        Ok(out)
    }

    /// The parts in order: literal text and property names.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        self.parts.iter().map(|p| match p {
            Part::Text(t) => Piece::Text(t),
            Part::Property(name) => Piece::Property(name),
        })
    }

    /// The template's literal text parts, for checks at deploy time.
    pub fn literal_text(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            Part::Property(_) => None,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(name: &str) -> Option<&'static str> {
        match name {
            "as2_from" => Some("ACME"),
            "file_name" => Some("po.x12"),
            _ => None,
        }
    }

    #[test]
    fn renders_properties_and_literal_braces() {
        let t = Template::parse("{as2_from}/{{x}}-{ file_name }").expect("parses");
        assert_eq!(
            t.render(props, |v| v.to_string()).expect("renders"),
            "ACME/{x}-po.x12"
        );
        assert_eq!(
            t.render(props, |v| v.to_lowercase()).expect("renders"),
            "acme/{x}-po.x12"
        );
    }

    #[test]
    fn refuses_bad_templates_and_missing_properties() {
        assert_eq!(
            Template::parse("{as2_from"),
            Err(TemplateError::Unclosed(0))
        );
        assert_eq!(Template::parse("a}b"), Err(TemplateError::StrayClose(1)));
        assert!(matches!(
            Template::parse("{}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            Template::parse("{a/b}"),
            Err(TemplateError::BadName(_))
        ));
        let t = Template::parse("{nope}").expect("parses");
        assert_eq!(
            t.render(props, |v| v.to_string()),
            Err(TemplateError::Missing("nope".into()))
        );
    }
}
