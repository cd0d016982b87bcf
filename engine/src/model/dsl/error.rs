//! Errors in a DSL document: each names the file, line, column and path, and all of a
//! document's errors are reported together.

use std::fmt;
use std::sync::Arc;

use super::document::Span;

/// One problem in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DslError {
    /// File name as given to the reader (`schema.yaml`).
    pub file: String,
    /// Path in the document (`schemas.public.tables.todos.columns[2]`); empty for the whole
    /// document.
    pub path: String,
    /// Line, from 1 (0 when unknown).
    pub line: u32,
    /// Column in characters, from 1 (0 when unknown).
    pub column: u32,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when there is something to suggest (`did you mean `not_null`?`).
    pub hint: Option<String>,
    /// Byte offset of the offending text.
    pub offset: usize,
    /// Byte length of the offending text.
    pub len: usize,
}

impl DslError {
    pub(crate) fn new(
        file: &str,
        path: &str,
        span: Span,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        DslError {
            file: file.to_owned(),
            path: path.to_owned(),
            line: span.line,
            column: span.column,
            message: message.into(),
            hint,
            offset: span.offset,
            len: span.len,
        }
    }
}

impl fmt::Display for DslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file.is_empty() {
            "<document>"
        } else {
            &self.file
        };
        write!(f, "{file}:{}:{}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, ", {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DslError {}

/// Every problem found in a document, in source order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DslErrors {
    /// The problems, sorted by position.
    pub errors: Vec<DslError>,
    /// The document's text, when known, so that renderers can show the offending lines.
    pub source: Option<Arc<str>>,
}

impl DslErrors {
    pub(crate) fn new(mut errors: Vec<DslError>, source: Option<Arc<str>>) -> Self {
        // Unknown positions (line 0) go last; the sort is stable so that errors at one place
        // keep the order they were found in.
        errors.sort_by_key(|e| (e.line == 0, e.line, e.column));
        errors.dedup();
        DslErrors { errors, source }
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when there is no problem (never the case for an `Err`).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, DslError> {
        self.errors.iter()
    }
}

impl fmt::Display for DslErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DslErrors {}

impl<'a> IntoIterator for &'a DslErrors {
    type Item = &'a DslError;
    type IntoIter = std::slice::Iter<'a, DslError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl miette::Diagnostic for DslError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.hint
            .as_ref()
            .map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.line == 0 {
            return None;
        }
        let label = if self.path.is_empty() {
            None
        } else {
            Some(self.path.clone())
        };
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            label,
            self.offset,
            self.len,
        ))))
    }
}

impl miette::Diagnostic for DslErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new("lockplane::dsl"))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.errors.iter().map(|e| e as &dyn miette::Diagnostic),
        ))
    }
}
