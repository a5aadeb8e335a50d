//! A small namespace-aware XML tree for the WebDAV bodies the gateway reads and rewrites
//! (PROPFIND requests, multistatus answers, `push-register`). Parsing resolves every name to
//! (namespace, local name); serializing declares each namespace once on the root with a
//! conventional prefix. Prefixes and insignificant whitespace of the input are not kept, the
//! meaning is.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// The `DAV:` namespace.
pub const DAV: &str = "DAV:";
/// The WebDAV-Push namespace.
pub const PUSH: &str = "https://bitfire.at/webdav-push";
/// davpush's own namespace for what the draft's *Service detection* asks for and the spec lacks.
pub const DAVPUSH: &str = "urn:davpush:1";

/// The namespace of the predeclared `xml` prefix (`xml:lang`).
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations, which no element or attribute may be in.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Maximum element nesting accepted (bodies are small; deeper is an attack or an error).
const MAX_DEPTH: usize = 64;

/// The body is not well-formed XML (or too deep).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

/// An attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Namespace, for prefixed attributes.
    pub ns: Option<String>,
    /// Local name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// An element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Namespace.
    pub ns: Option<String>,
    /// Local name.
    pub name: String,
    /// Attributes (namespace declarations excluded).
    pub attrs: Vec<Attr>,
    /// Children.
    pub children: Vec<Node>,
}

/// A child node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data.
    Text(String),
}

impl Element {
    /// A new empty element.
    pub fn new(ns: &str, name: &str) -> Self {
        Element { ns: Some(ns.to_owned()), name: name.to_owned(), ..Default::default() }
    }

    /// With a text child.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// With an element child.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// With an attribute (no namespace).
    pub fn with_attr(mut self, name: &str, value: &str) -> Self {
        self.attrs.push(Attr { ns: None, name: name.to_owned(), value: value.to_owned() });
        self
    }

    /// Whether this is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Mutable child elements.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// The text content (concatenated, trimmed).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            match n {
                Node::Text(t) => s.push_str(t),
                Node::Element(e) => s.push_str(&e.text()),
            }
        }
        s.trim().to_owned()
    }

    /// The value of an attribute without namespace.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.ns.is_none() && a.name == name).map(|a| a.value.as_str())
    }
}

fn ns_of(r: &ResolveResult<'_>) -> Result<Option<String>, XmlError> {
    match r {
        // quick-xml hands the declaration's value as written: resolve its references.
        ResolveResult::Bound(ns) => {
            let raw = String::from_utf8_lossy(ns.0.as_bytes());
            let name = quick_xml::escape::unescape(&raw).map_err(|e| XmlError(format!("namespace name: {e}")))?;
            Ok(Some(name.into_owned()))
        }
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(XmlError(format!("undeclared namespace prefix `{p}`"))),
    }
}

/// The character an entity or character reference stands for.
pub(crate) fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    if r.is_char_ref() { r.resolve_char_ref().ok().flatten() } else { entity(r) }
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a document; returns its root element.
pub fn parse(xml: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let err = |e: quick_xml::Error| XmlError(e.to_string());
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(err)?;
        let ns = match &event {
            Event::Start(_) | Event::Empty(_) => ns_of(&resolved)?,
            _ => None,
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError("elements nested too deeply".into()));
                }
                check_name(e.local_name().as_ref())?;
                if ns.as_deref() == Some(XMLNS_NS) {
                    return Err(XmlError("an element with the reserved prefix `xmlns`".into()));
                }
                let mut el = Element { ns, name: e.local_name().as_ref().to_owned(), ..Default::default() };
                for a in e.attributes() {
                    let a = a.map_err(|e| XmlError(e.to_string()))?;
                    if a.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (r, local) = reader.resolver_mut().resolve_attribute(a.key);
                    let ans = ns_of(&r)?;
                    check_name(local.as_ref())?;
                    let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(err)?.into_owned();
                    el.attrs.push(Attr { ns: ans, name: local.as_ref().to_owned(), value });
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(el);
                } else if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Element(el));
                } else {
                    root = Some(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(parent) = stack.last_mut() {
                    push_text(parent, &t.xml10_content());
                } else if !t.trim().is_empty() {
                    return Err(XmlError("text outside the root element".into()));
                }
            }
            Event::CData(c) => {
                if let Some(parent) = stack.last_mut() {
                    push_text(parent, &c.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() { r.resolve_char_ref().map_err(err)? } else { entity(&r) };
                let c = c.ok_or_else(|| XmlError(format!("unknown entity `&{};`", &*r)))?;
                if let Some(parent) = stack.last_mut() {
                    push_text(parent, c.encode_utf8(&mut [0; 4]));
                }
            }
            Event::DocType(_) => return Err(XmlError("DTDs are not accepted".into())),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError("unexpected end of document".into()));
    }
    root.ok_or_else(|| XmlError("no root element".into()))
}

/// A local name must be an XML name: quick-xml takes whatever stands between `<` and the first
/// space or `/`, `>`. ASCII is checked exactly; other characters are let through.
fn check_name(name: &str) -> Result<(), XmlError> {
    let start_ok = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
    let ok = match name.as_bytes().split_first() {
        Some((&first, rest)) => {
            start_ok(first) && rest.iter().all(|&b| start_ok(b) || b.is_ascii_digit() || b == b'-' || b == b'.')
        }
        None => false,
    };
    if ok { Ok(()) } else { Err(XmlError(format!("`{name}` is not an XML name"))) }
}

fn push_text(parent: &mut Element, s: &str) {
    if let Some(Node::Text(t)) = parent.children.last_mut() {
        t.push_str(s);
    } else {
        parent.children.push(Node::Text(s.to_owned()));
    }
}

/// Appends `s` escaped for XML text or attribute values.
pub fn escape_into(s: &str, out: &mut String) {
    escape(s, out)
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn collect_ns(e: &Element, out: &mut BTreeMap<String, String>) {
    let mut add = |ns: &Option<String>| {
        if let Some(ns) = ns
            && !out.contains_key(ns)
        {
            let prefix = match ns.as_str() {
                XML_NS => "xml".to_owned(),
                DAV => "D".to_owned(),
                PUSH => "P".to_owned(),
                DAVPUSH => "X".to_owned(),
                "urn:ietf:params:xml:ns:caldav" => "C".to_owned(),
                "urn:ietf:params:xml:ns:carddav" => "CR".to_owned(),
                "http://calendarserver.org/ns/" => "CS".to_owned(),
                _ => format!("ns{}", out.len()),
            };
            out.insert(ns.clone(), prefix);
        }
    };
    add(&e.ns);
    for a in &e.attrs {
        add(&a.ns);
    }
    for c in e.elements() {
        collect_ns(c, out);
    }
}

fn write_el(e: &Element, prefixes: &BTreeMap<String, String>, root: bool, out: &mut String) {
    let qname = match &e.ns {
        Some(ns) => format!("{}:{}", prefixes[ns], e.name),
        None => e.name.clone(),
    };
    out.push('<');
    out.push_str(&qname);
    if root {
        // `xml` is bound by definition (and may not be declared to anything else).
        for (ns, p) in prefixes.iter().filter(|(ns, _)| *ns != XML_NS) {
            let _ = write!(out, " xmlns:{p}=\"");
            escape(ns, out);
            out.push('"');
        }
    }
    for a in &e.attrs {
        out.push(' ');
        if let Some(ns) = &a.ns {
            out.push_str(&prefixes[ns]);
            out.push(':');
        }
        out.push_str(&a.name);
        out.push_str("=\"");
        escape(&a.value, out);
        out.push('"');
    }
    if e.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for c in &e.children {
        match c {
            Node::Text(t) => escape(t, out),
            Node::Element(el) => write_el(el, prefixes, false, out),
        }
    }
    out.push_str("</");
    out.push_str(&qname);
    out.push('>');
}

/// Serializes one element on its own, declaring the namespaces it uses on itself (for splicing
/// into a document whose other parts are kept as they are).
pub fn serialize_fragment(el: &Element) -> String {
    let mut prefixes = BTreeMap::new();
    collect_ns(el, &mut prefixes);
    let mut out = String::new();
    write_el(el, &prefixes, true, &mut out);
    out
}

/// Serializes a document with an XML declaration.
pub fn serialize(root: &Element) -> String {
    let mut prefixes = BTreeMap::new();
    collect_ns(root, &mut prefixes);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    write_el(root, &prefixes, true, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_meaning() {
        let src = r#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/" xmlns="urn:other">
  <d:response><d:href>/a%20b/&amp;x</d:href>
    <d:propstat><d:prop><cs:getctag>"1"</cs:getctag><plain attr="v&lt;"/></d:prop>
    <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
</d:multistatus>"#;
        let root = parse(src).unwrap();
        assert!(root.is(DAV, "multistatus"));
        let resp = root.child(DAV, "response").unwrap();
        assert_eq!(resp.child(DAV, "href").unwrap().text(), "/a%20b/&x");
        let prop = resp.child(DAV, "propstat").unwrap().child(DAV, "prop").unwrap();
        assert_eq!(prop.child("urn:other", "plain").unwrap().attr("attr"), Some("v<"));
        let again = parse(&serialize(&root)).unwrap();
        assert_eq!(again, root);
    }

    /// Issue 9 (fuzzing, target `xml_tree`): a namespace name written with a reference
    /// (`&gt;`, `&#58;`) was kept escaped, so the element was in another namespace than the one
    /// declared, and every serialization escaped it once more.
    #[test]
    fn issue_9_namespace_names_are_unescaped_and_round_trip() {
        let src = r#"<d:multistatus xmlns:d="DAV&#58;" xmlns:x="urn:a&gt;b&amp;c"><x:p/></d:multistatus>"#;
        let root = parse(src).unwrap();
        assert!(root.is(DAV, "multistatus"), "{root:?}");
        assert!(root.child("urn:a>b&c", "p").is_some(), "{root:?}");
        let once = serialize(&root);
        let again = parse(&once).unwrap();
        assert_eq!(again, root);
        assert_eq!(serialize(&again), once);
        assert!(parse(r#"<a xmlns="urn:&bogus;"/>"#).is_err(), "an unknown entity in a namespace name");
    }

    /// Issue 9 (fuzzing, target `xml_tree`): `<` and `/>` around whitespace were read as an
    /// element without a name, which serialized as `</>`.
    #[test]
    fn issue_9_elements_without_a_name_are_errors() {
        for bad in ["<\n/>", "<a><\n/></a>", "<a xmlns:x='urn:x'><x:/></a>"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Issue 9 (fuzzing, target `xml_tree`): `xml:lang` (common on `DAV:displayname`) was
    /// serialized with a new prefix bound to the XML namespace, which no parser accepts; and
    /// names that are not XML names, or elements in the `xmlns` namespace, were accepted.
    #[test]
    fn issue_9_xml_lang_round_trips_and_names_are_checked() {
        let src = r#"<D:displayname xmlns:D="DAV:" xml:lang="en">Work</D:displayname>"#;
        let root = parse(src).unwrap();
        let once = serialize(&root);
        assert!(once.contains(r#" xml:lang="en""#) && !once.contains("xmlns:xml"), "{once}");
        assert_eq!(parse(&once).unwrap(), root);
        for bad in ["<xmlns:n/>", "<n/|?/>", "<a b|c='1'/>", "<1a/>"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for good in ["<a-b.c_1/>", "<_a/>", "<é/>"] {
            assert!(parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        for bad in ["", "<a>", "<a></b>", "<x:a/>", "<a>&bogus;</a>", "<!DOCTYPE a [<!ENTITY x 'y'>]><a/>", "text"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err());
    }
}
