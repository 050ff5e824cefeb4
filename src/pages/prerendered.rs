//! Failure pages rendered once and filled in per request.
//!
//! Most failure pages differ from the last one of the same outcome and language only in their reference and time:
//! every callback with a missing or forged state (which anyone can send, as fast as they like) shows the same page.
//! Rendering it again through the template (the messages, HTML escaping, a growing buffer) was about a tenth of
//! what such a page cost callback-gate (docs/performance.md, Finding 19). So a page whose other inputs are all
//! fixed (the outcome, the language, and in development mode the failure's detail) is rendered once with marks
//! where the reference and time go, cut at the marks, and kept; each request joins the parts around its own values.
//! Pages with anything of the request's own in them (a restart link, a return address, a support link with the
//! reference, a provider's error text) are rendered whole every time, as before.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Kinds of page kept, at most: an outcome and a language are one each, but in development mode a failure's detail
/// is part of the page too, and some details quote the request (an unknown connection's name). Past this, pages
/// are rendered whole.
const MAX_PAGES: usize = 256;

/// Pages kept for one outcome in one language, at most: they differ only in their developer details.
const MAX_PER_OUTCOME: usize = 8;

/// Marks where a value of the request goes, in a page rendered to be kept: a Unicode noncharacter followed by the
/// slot's letter. Neither the templates nor the catalog's messages hold a noncharacter; a page that does all the
/// same (from a setting, or in development mode a detail quoting the request) cannot be cut, and is rendered whole.
const MARK: char = '\u{FDD0}';

/// A value that differs with every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Reference,
    /// The time as RFC 3339, for `<time datetime>`.
    At,
    /// The time as people read it.
    AtDisplay,
}

impl Slot {
    const ALL: [Slot; 3] = [Slot::Reference, Slot::At, Slot::AtDisplay];

    fn letter(self) -> char {
        match self {
            Slot::Reference => 'r',
            Slot::At => 'a',
            Slot::AtDisplay => 'd',
        }
    }

    /// The mark rendered in this slot's place.
    pub fn mark(self) -> String {
        [MARK, self.letter()].into_iter().collect()
    }
}

/// The values of one request, for [`Parts::fill`].
pub struct Values<'a> {
    pub reference: &'a str,
    pub at: &'a str,
    pub at_display: &'a str,
}

impl Values<'_> {
    fn get(&self, slot: Slot) -> &str {
        match slot {
            Slot::Reference => self.reference,
            Slot::At => self.at,
            Slot::AtDisplay => self.at_display,
        }
    }
}

/// A page cut at its slots: `literals[0]`, the value of `slots[0]`, `literals[1]`, and so on.
#[derive(Debug)]
pub struct Parts {
    literals: Vec<Box<str>>,
    slots: Vec<Slot>,
    literal_bytes: usize,
}

impl Parts {
    /// Cuts a page rendered with [`Slot::mark`] in each slot's place. `None` when the page holds a mark anywhere
    /// else, or does not hold each slot exactly once: then it cannot be kept.
    pub fn cut(rendered: &str) -> Option<Self> {
        let mut literals: Vec<Box<str>> = Vec::with_capacity(Slot::ALL.len() + 1);
        let mut slots = Vec::with_capacity(Slot::ALL.len());
        let mut rest = rendered;
        while let Some(at) = rest.find(MARK) {
            let after = &rest[at + MARK.len_utf8()..];
            let letter = after.chars().next()?;
            let slot = Slot::ALL.into_iter().find(|slot| slot.letter() == letter)?;
            literals.push(Box::from(&rest[..at]));
            slots.push(slot);
            rest = &after[letter.len_utf8()..];
        }
        literals.push(Box::from(rest));
        let each_once = Slot::ALL.iter().all(|slot| slots.iter().filter(|s| *s == slot).count() == 1);
        let literal_bytes = literals.iter().map(|literal| literal.len()).sum();
        each_once.then_some(Self { literals, slots, literal_bytes })
    }

    /// The page with this request's values. `None` when a value holds anything HTML would read as markup: the
    /// parts were escaped when rendered, the values are not, so such a page is rendered whole instead. (References
    /// and times are made by callback-gate and never do.)
    pub fn fill(&self, values: &Values<'_>) -> Option<String> {
        let plain = |value: &str| !value.contains(['<', '>', '&', '"', '\'', MARK]);
        if !Slot::ALL.iter().all(|slot| plain(values.get(*slot))) {
            return None;
        }
        let value_bytes: usize = self.slots.iter().map(|slot| values.get(*slot).len()).sum();
        let mut page = String::with_capacity(self.literal_bytes + value_bytes);
        let mut literals = self.literals.iter();
        for slot in &self.slots {
            page.push_str(literals.next()?);
            page.push_str(values.get(*slot));
        }
        page.push_str(literals.next()?);
        Some(page)
    }
}

/// What makes a kept page: its outcome and language, and in development mode the failure's detail and the
/// specifics added to its hint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The catalog entry, by address: entries are `'static` and each outcome has one.
    pub entry: usize,
    pub language: usize,
}

/// What of a failure a development-mode page shows besides its outcome; empty in production mode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Developer {
    pub detail: String,
    pub hint_detail: Option<String>,
}

/// The pages kept for one outcome in one language.
type Kept = Vec<(Developer, Arc<Parts>)>;

/// The failure pages kept so far, for the life of the process.
#[derive(Debug, Default)]
pub struct Prerendered {
    pages: RwLock<HashMap<Key, Kept>>,
}

impl Prerendered {
    /// The parts kept for this page, if any.
    pub fn get(&self, key: &Key, detail: &str, hint_detail: Option<&str>) -> Option<Arc<Parts>> {
        let pages = self.pages.read().ok()?;
        let kept = pages.get(key)?;
        kept.iter()
            .find(|(developer, _)| developer.detail == detail && developer.hint_detail.as_deref() == hint_detail)
            .map(|(_, parts)| parts.clone())
    }

    /// Keeps a page's parts, unless as many pages as are kept at most are kept already.
    pub fn keep(&self, key: Key, developer: Developer, parts: Arc<Parts>) {
        let Ok(mut pages) = self.pages.write() else { return };
        let kinds: usize = pages.values().map(Vec::len).sum();
        if kinds >= MAX_PAGES {
            return;
        }
        let kept = pages.entry(key).or_default();
        if kept.len() < MAX_PER_OUTCOME && !kept.iter().any(|(d, _)| *d == developer) {
            kept.push((developer, parts));
        }
    }

    /// Pages kept, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pages.read().map_or(0, |pages| pages.values().map(Vec::len).sum())
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values { reference: "CG-ABCD-1234", at: "2026-12-04T10:00:00.5Z", at_display: "2026-12-04 10:00 UTC" }
    }

    fn marked(template: &str) -> String {
        template
            .replace("{r}", &Slot::Reference.mark())
            .replace("{a}", &Slot::At.mark())
            .replace("{d}", &Slot::AtDisplay.mark())
    }

    #[test]
    fn a_cut_page_filled_is_the_page_rendered_with_the_values() {
        let parts = Parts::cut(&marked("<p>{r}</p><time datetime=\"{a}\">{d}</time>")).expect("three slots");
        assert_eq!(
            parts.fill(&values()).as_deref(),
            Some("<p>CG-ABCD-1234</p><time datetime=\"2026-12-04T10:00:00.5Z\">2026-12-04 10:00 UTC</time>")
        );
        let edges = Parts::cut(&marked("{r}{a}{d}")).expect("slots at both ends");
        assert_eq!(edges.fill(&values()).as_deref(), Some("CG-ABCD-12342026-12-04T10:00:00.5Z2026-12-04 10:00 UTC"));
    }

    #[test]
    fn a_page_with_a_missing_repeated_or_stray_mark_is_not_kept() {
        assert!(Parts::cut(&marked("{r} {a}")).is_none(), "no display time");
        assert!(Parts::cut(&marked("{r} {a} {d} {r}")).is_none(), "the reference twice");
        assert!(Parts::cut(&format!("{} {MARK}x", marked("{r} {a} {d}"))).is_none(), "a mark of no slot");
        assert!(Parts::cut(&format!("{} {MARK}", marked("{r} {a} {d}"))).is_none(), "a mark at the end");
        assert!(Parts::cut("no marks at all").is_none());
    }

    #[test]
    fn values_that_would_need_escaping_are_refused() {
        let parts = Parts::cut(&marked("{r}{a}{d}")).expect("three slots");
        for reference in ["<b>", "a&b", "\"", "'", "x\u{FDD0}r"] {
            let values = Values { reference, ..values() };
            assert_eq!(parts.fill(&values), None, "{reference:?}");
        }
    }

    #[test]
    fn pages_are_found_by_outcome_language_and_detail_and_kept_up_to_a_bound() {
        let kept = Prerendered::default();
        let parts = Arc::new(Parts::cut(&marked("{r}{a}{d}")).expect("three slots"));
        let key = |entry, language| Key { entry, language };
        let developer = |detail: &str| Developer { detail: detail.to_owned(), hint_detail: None };
        kept.keep(key(1, 0), developer("the callback has no state parameter"), parts.clone());
        assert!(kept.get(&key(1, 0), "the callback has no state parameter", None).is_some());
        assert!(kept.get(&key(1, 1), "the callback has no state parameter", None).is_none(), "another language");
        assert!(kept.get(&key(2, 0), "the callback has no state parameter", None).is_none(), "another outcome");
        assert!(kept.get(&key(1, 0), "another detail", None).is_none());
        assert!(kept.get(&key(1, 0), "the callback has no state parameter", Some("specifics")).is_none());

        for n in 0..MAX_PER_OUTCOME * 2 {
            kept.keep(key(3, 0), developer(&format!("detail {n}")), parts.clone());
        }
        assert!(kept.get(&key(3, 0), "detail 0", None).is_some());
        assert!(kept.get(&key(3, 0), &format!("detail {}", MAX_PER_OUTCOME), None).is_none(), "past the bound");
        for n in 0..MAX_PAGES * 2 {
            kept.keep(key(4 + n, 0), Developer::default(), parts.clone());
        }
        assert_eq!(kept.len(), MAX_PAGES);
    }
}
