//! Static zone data for the zones Meridian is authoritative for.
//!
//! Zones come from standard RFC 1035 zone files. RDATA is parsed by hickory-proto's
//! zone-file parser, but one record at a time: its errors carry no position, so this
//! module splits the file into entries itself and reports every problem with the file
//! and line of the entry it belongs to, all at once.
//!
//! [`Zone::lookup`] gives the resolver the shape of the answer (records, a CNAME to
//! follow, NODATA, a referral or NXDOMAIN). Names are indexed by their lower-cased wire
//! form, built on the stack, whose suffixes are the name's ancestors: an exact match
//! costs one hash lookup and allocates nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};

use crate::config::Problem;

/// Deepest `$INCLUDE` nesting accepted: real zones use one or two levels, more is a loop.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Longest name in wire form without the root label (RFC 1035: 255 octets with it).
const MAX_KEY: usize = 254;
/// Most labels a name can have within [`MAX_KEY`].
const MAX_LABELS: usize = 127;
/// Index of the apex node, created first.
const APEX: usize = 0;

/// Why a name cannot be reserved for routing; each carries the line of the static
/// record in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The name owns static records.
    Records(u64),
    /// The name is at or below a zone cut (the NS record's line).
    Delegated(u64),
    /// A wildcard whose base has static names below it.
    Shadowed(u64),
}

/// The records of one authoritative zone, validated and indexed for lookup.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    tree: Tree,
    soa: Record,
    negative_soa: Record,
}

/// What the zone holds for a question; the resolver turns it into a response.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "a short-lived return value; boxing the CNAME would allocate on the answer path"
)]
pub enum Lookup<'a> {
    /// RRset of the asked type at the name. For qtype ANY: one RRset only (RFC 8482
    /// minimal ANY), the first in type-number order other than RRSIG/NSEC.
    /// Wildcard-synthesized answers are owned, with the owner rewritten to the query
    /// name as given.
    Answer(Cow<'a, [Record]>),
    /// The name owns a CNAME and qtype is not CNAME: the resolver puts it in the
    /// answer and follows it.
    Cname(Cow<'a, Record>),
    /// The name exists (records, empty non-terminal, or reserved) but has nothing of
    /// this type.
    NoData,
    /// The name is at or below a zone cut (NS records at a non-apex name): a referral.
    /// `ns` is the NS RRset of the cut, `glue` the A/AAAA records in the zone for
    /// those NS targets that lie at or below the cut.
    Delegation {
        /// NS RRset at the cut.
        ns: &'a [Record],
        /// Addresses of in-bailiwick name servers, for the additional section.
        glue: Vec<Record>,
    },
    /// No such name (and no wildcard covers it). Also the answer for a name outside
    /// the zone: callers pick the zone with [`Zone::contains`] first.
    NxDomain,
}

impl Zone {
    /// Reads and parses a zone file; all problems reported at once, each with file and line.
    pub fn load(origin: &Name, path: &Path) -> Result<Zone, Vec<Problem>> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(origin, &text, path),
            Err(err) => Err(vec![Problem::file(
                path,
                format!("cannot read zone file: {err}"),
            )]),
        }
    }

    /// Same from text (path used only in messages and for relative `$INCLUDE`).
    pub fn parse(origin: &Name, text: &str, path: &Path) -> Result<Zone, Vec<Problem>> {
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        let Some(tree) = Tree::new(&origin) else {
            return Err(vec![Problem::file(
                path,
                format!("zone origin {origin} is not a valid domain name"),
            )]);
        };
        let mut builder = Builder {
            origin: origin.clone(),
            tree,
            files: vec![path.to_path_buf()],
            soa: None,
            problems: Vec::new(),
        };
        let context = Context {
            origin,
            default_ttl: None,
            last_ttl: None,
            last_owner: Owner::Unset,
        };
        let mut including = vec![canonical(path)];
        builder.read(text, 0, context, &mut including);
        builder.finish()
    }

    /// The zone's apex, lower-case and fully qualified.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The apex SOA record.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// SOA for the authority section of NXDOMAIN/NODATA: TTL = min(SOA TTL, SOA
    /// MINIMUM), how long resolvers may cache the negative answer (RFC 2308 section 5).
    pub fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    /// The NS RRset at the apex (never empty: loading checks it).
    pub fn apex_ns(&self) -> &[Record] {
        self.tree.nodes[APEX]
            .rrset(RecordType::NS)
            .map_or(&[], |set| &set.records)
    }

    /// Marks `name` (in this zone) as existing without static records, so its ancestors
    /// become empty non-terminals and it answers NODATA for types nobody serves.
    /// Meridian uses it for geo-routed names (answered elsewhere). A wildcard
    /// `*.x.zone.` does not itself match queries here (the resolver handles wildcard
    /// geo names before asking the zone); it only makes `x.zone.` an empty non-terminal.
    ///
    /// Fails, with the line of the static record in the way, if the name already owns
    /// records, lies at or below a zone cut (its answers belong to the child zone),
    /// or, for a wildcard, if static names exist below its base: a wildcard never
    /// covers a name that exists (RFC 4592), so those names could not be routed and
    /// would silently shadow part of the domain. A name outside the zone is left
    /// alone (`Ok`): the caller chose the zone with [`Zone::contains`].
    pub fn reserve(&mut self, name: &Name) -> Result<(), Conflict> {
        let Some(key) = Key::new(name) else {
            return Ok(());
        };
        let Some(depth) = self.tree.depth(&key) else {
            return Ok(());
        };
        if let Some(cut) = self.tree.topmost_cut(&key, 0, depth) {
            let line = self.tree.nodes[cut].first.map_or(0, |loc| loc.line);
            return Err(Conflict::Delegated(line));
        }
        if let Some(id) = self.tree.find(key.ancestor(0))
            && let Some(loc) = self.tree.nodes[id].first
        {
            return Err(Conflict::Records(loc.line));
        }
        if name.is_wildcard()
            && let Some(line) = self.tree.first_record_below(key.ancestor(1))
        {
            return Err(Conflict::Shadowed(line));
        }
        if self.tree.find(key.ancestor(0)).is_some() {
            return Ok(());
        }
        let first = usize::from(name.is_wildcard());
        if first >= depth {
            // `*.<apex>`: the apex exists already.
            return Ok(());
        }
        self.tree.ensure(&key, first, depth);
        // The new nodes may lie below a zone cut: answers there must stay referrals.
        for skip in first..depth {
            if let Some(id) = self.tree.find(key.ancestor(skip)) {
                self.tree.nodes[id].cut = self.tree.topmost_cut(&key, skip, depth);
            }
        }
        Ok(())
    }

    /// What the zone holds for `qname`/`qtype`. Allocates only to synthesize from a
    /// wildcard and for referral glue.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup<'_> {
        let Some(key) = Key::new(qname) else {
            return Lookup::NxDomain;
        };
        let Some(depth) = self.tree.depth(&key) else {
            return Lookup::NxDomain;
        };
        if let Some(id) = self.tree.find(key.ancestor(0)) {
            let node = &self.tree.nodes[id];
            // DS at a cut belongs to the parent side (RFC 4035 section 3.1.4.1).
            return match node.cut {
                Some(cut) if !(cut == id && qtype == RecordType::DS) => self.delegation(cut),
                _ => node.answer(qtype),
            };
        }
        // The closest encloser (RFC 4592 section 3.3.1) always exists: every ancestor
        // of a node down to the apex is a node.
        for skip in 1..=depth {
            let Some(id) = self.tree.find(key.ancestor(skip)) else {
                continue;
            };
            if let Some(cut) = self.tree.nodes[id].cut {
                return self.delegation(cut);
            }
            return self.synthesize(&key, skip, qname, qtype);
        }
        Lookup::NxDomain
    }

    /// Whether `name` is at or below the apex.
    pub fn contains(&self, name: &Name) -> bool {
        Key::new(name).is_some_and(|key| self.tree.depth(&key).is_some())
    }

    /// Answers from `*.<closest encloser>` if it exists, owners rewritten to `qname`.
    fn synthesize(&self, key: &Key, skip: usize, qname: &Name, qtype: RecordType) -> Lookup<'_> {
        let encloser = key.ancestor(skip);
        let mut wildcard = [0_u8; MAX_KEY + 2];
        wildcard[0] = 1;
        wildcard[1] = b'*';
        let Some(rest) = wildcard.get_mut(2..2 + encloser.len()) else {
            return Lookup::NxDomain;
        };
        rest.copy_from_slice(encloser);
        let Some(id) = self.tree.find(&wildcard[..2 + encloser.len()]) else {
            return Lookup::NxDomain;
        };
        let rename = |record: &Record| {
            let mut record = record.clone();
            record.name = qname.clone();
            record
        };
        match self.tree.nodes[id].answer(qtype) {
            Lookup::Answer(records) => {
                Lookup::Answer(Cow::Owned(records.iter().map(rename).collect()))
            }
            Lookup::Cname(record) => Lookup::Cname(Cow::Owned(rename(&record))),
            other => other,
        }
    }

    fn delegation(&self, cut: usize) -> Lookup<'_> {
        let node = &self.tree.nodes[cut];
        Lookup::Delegation {
            ns: node.rrset(RecordType::NS).map_or(&[], |set| &set.records),
            glue: node.glue.clone(),
        }
    }
}

/// Where a record came from: index into the files read, and 1-based line.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: usize,
    line: u64,
}

/// One RRset, with the place of its first record for conflict messages.
#[derive(Debug, Clone)]
struct RrSet {
    rtype: RecordType,
    first: Loc,
    records: Vec<Record>,
}

/// A name in the zone: one with records, an empty non-terminal or a reserved name.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Sorted by type number, so minimal ANY is deterministic.
    rrsets: Vec<RrSet>,
    /// The first static record owned here; `None` for ENTs and reserved names.
    first: Option<Loc>,
    /// Topmost zone cut at or above this node (never the apex): answers are referrals.
    cut: Option<usize>,
    /// At a topmost cut: A/AAAA of its NS targets at or below it.
    glue: Vec<Record>,
}

impl Node {
    fn rrset(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|set| set.rtype == rtype)
    }

    /// The answer from this node's own data (cuts and wildcards already dealt with).
    fn answer(&self, qtype: RecordType) -> Lookup<'_> {
        if qtype == RecordType::ANY {
            // A CNAME owner has nothing else but DNSSEC records, so this picks the CNAME.
            return match self.rrsets.iter().find(|set| !is_dnssec_meta(set.rtype)) {
                Some(set) => Lookup::Answer(Cow::Borrowed(&set.records)),
                None => Lookup::NoData,
            };
        }
        if let Some(set) = self.rrset(qtype) {
            return Lookup::Answer(Cow::Borrowed(&set.records));
        }
        match self
            .rrset(RecordType::CNAME)
            .and_then(|set| set.records.first())
        {
            Some(cname) => Lookup::Cname(Cow::Borrowed(cname)),
            None => Lookup::NoData,
        }
    }

    /// Adds a record, dropping exact duplicates (RFC 2181 section 5: an RRset is a set).
    fn insert(&mut self, record: Record, loc: Loc) {
        self.first.get_or_insert(loc);
        let rtype = record.record_type();
        if let Some(set) = self.rrsets.iter_mut().find(|set| set.rtype == rtype) {
            if !set.records.contains(&record) {
                set.records.push(record);
            }
            return;
        }
        let at = self
            .rrsets
            .partition_point(|set| u16::from(set.rtype) < u16::from(rtype));
        self.rrsets.insert(
            at,
            RrSet {
                rtype,
                first: loc,
                records: vec![record],
            },
        );
    }
}

/// RRSIG and NSEC may share a name with a CNAME (RFC 4035 section 2.5) and are skipped
/// by minimal ANY.
fn is_dnssec_meta(rtype: RecordType) -> bool {
    matches!(rtype, RecordType::RRSIG | RecordType::NSEC)
}

/// Whether `key` names a proper descendant of `base` (both [`Key`] bytes).
fn is_strictly_below(key: &[u8], base: &[u8]) -> bool {
    let mut at = 0;
    while at < key.len() {
        at += 1 + usize::from(key[at]);
        if key.get(at..) == Some(base) {
            return true;
        }
    }
    false
}

/// A name as lower-cased wire-format labels (root label left out), on the stack. Each
/// ancestor of the name is a suffix of it, so walking towards the apex builds no names.
struct Key {
    buf: [u8; MAX_KEY],
    len: usize,
    /// Offset of each label's length octet, leftmost label first.
    starts: [u8; MAX_LABELS],
    labels: usize,
}

impl Key {
    fn empty() -> Self {
        Self {
            buf: [0; MAX_KEY],
            len: 0,
            starts: [0; MAX_LABELS],
            labels: 0,
        }
    }

    /// `None` only for names longer than DNS allows.
    fn new(name: &Name) -> Option<Self> {
        let mut key = Self::empty();
        for label in name.iter() {
            let start = key.len;
            let end = start + 1 + label.len();
            if end > MAX_KEY || key.labels >= MAX_LABELS {
                return None;
            }
            key.buf[start] = u8::try_from(label.len()).ok().filter(|n| *n <= 63)?;
            for (dst, src) in key.buf[start + 1..end].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            key.starts[key.labels] = u8::try_from(start).ok()?;
            key.len = end;
            key.labels += 1;
        }
        Some(key)
    }

    /// Rebuilds the label offsets of a stored key.
    fn from_wire(wire: &[u8]) -> Option<Self> {
        let mut key = Self::empty();
        key.buf.get_mut(..wire.len())?.copy_from_slice(wire);
        key.len = wire.len();
        let mut pos = 0;
        while pos < wire.len() {
            *key.starts.get_mut(key.labels)? = u8::try_from(pos).ok()?;
            key.labels += 1;
            pos += 1 + usize::from(wire[pos]);
        }
        (pos == wire.len()).then_some(key)
    }

    /// The key of the ancestor `skip` labels up (0: the name itself).
    fn ancestor(&self, skip: usize) -> &[u8] {
        let start = if skip < self.labels {
            usize::from(self.starts[skip])
        } else {
            self.len
        };
        &self.buf[start..self.len]
    }
}

/// The zone's names and their data, keyed by [`Key`] bytes.
#[derive(Debug, Clone)]
struct Tree {
    origin_key: Box<[u8]>,
    origin_labels: usize,
    nodes: Vec<Node>,
    index: HashMap<Box<[u8]>, usize>,
}

impl Tree {
    fn new(origin: &Name) -> Option<Self> {
        let key = Key::new(origin)?;
        let origin_key: Box<[u8]> = key.ancestor(0).into();
        let mut index = HashMap::new();
        index.insert(origin_key.clone(), APEX);
        Some(Self {
            origin_key,
            origin_labels: key.labels,
            nodes: vec![Node::default()],
            index,
        })
    }

    /// Labels between the name and the apex, if the name is at or below the apex.
    fn depth(&self, key: &Key) -> Option<usize> {
        let depth = key.labels.checked_sub(self.origin_labels)?;
        (key.ancestor(depth) == &*self.origin_key).then_some(depth)
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Line of the first static record owned strictly below the name whose key is
    /// `base` (found by label boundaries, not bytes, so a label cannot fake a match).
    fn first_record_below(&self, base: &[u8]) -> Option<u64> {
        self.index
            .iter()
            .filter(|(key, _)| is_strictly_below(key, base))
            .filter_map(|(_, id)| self.nodes[*id].first.map(|loc| loc.line))
            .min()
    }

    /// The node `skip` labels above `key`, created with any missing ancestors (which
    /// become empty non-terminals). `depth` is the key's depth below the apex.
    fn ensure(&mut self, key: &Key, skip: usize, depth: usize) -> usize {
        let mut target = None;
        for level in skip..=depth {
            let existing = self.find(key.ancestor(level));
            let id = existing.unwrap_or_else(|| {
                let id = self.nodes.len();
                self.nodes.push(Node::default());
                self.index.insert(key.ancestor(level).into(), id);
                id
            });
            target.get_or_insert(id);
            if existing.is_some() {
                break;
            }
        }
        target.unwrap_or(APEX)
    }

    /// The cut closest to the apex among the name `skip` labels up and its ancestors.
    fn topmost_cut(&self, key: &Key, skip: usize, depth: usize) -> Option<usize> {
        (skip..depth).rev().find_map(|level| {
            self.find(key.ancestor(level))
                .filter(|id| self.nodes[*id].rrset(RecordType::NS).is_some())
        })
    }

    /// Records each node's zone cut, and the glue of each cut that answers referrals.
    fn link_cuts(&mut self) {
        let mut links = Vec::new();
        for (wire, id) in &self.index {
            if let Some(key) = Key::from_wire(wire)
                && let Some(depth) = self.depth(&key)
            {
                links.push((*id, self.topmost_cut(&key, 0, depth)));
            }
        }
        for (id, cut) in links {
            self.nodes[id].cut = cut;
        }
        for id in 0..self.nodes.len() {
            if self.nodes[id].cut == Some(id) {
                self.nodes[id].glue = self.glue(id);
            }
        }
    }

    fn glue(&self, cut: usize) -> Vec<Record> {
        let Some(ns) = self.nodes[cut].rrset(RecordType::NS) else {
            return Vec::new();
        };
        let mut glue = Vec::new();
        let mut seen: Vec<&Name> = Vec::new();
        for record in &ns.records {
            let RData::NS(target) = &record.data else {
                continue;
            };
            let target = &target.0;
            if !record.name.zone_of(target) || seen.contains(&target) {
                continue;
            }
            seen.push(target);
            let Some(id) = Key::new(target).and_then(|key| self.find(key.ancestor(0))) else {
                continue;
            };
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = self.nodes[id].rrset(rtype) {
                    glue.extend(set.records.iter().cloned());
                }
            }
        }
        glue
    }
}

/// Owner of the previous record, for entries that start with a blank.
#[derive(Clone)]
enum Owner {
    /// No record yet.
    Unset,
    Name(Name),
    /// The owner failed to parse: its continuation entries are checked but not loaded.
    Invalid,
}

/// Parser state carried from entry to entry (RFC 1035 section 5.1).
#[derive(Clone)]
struct Context {
    /// `$ORIGIN`, for relative names.
    origin: Name,
    /// `$TTL` (RFC 2308 section 4).
    default_ttl: Option<u32>,
    /// TTL of the previous record: the default when there is no `$TTL` (RFC 1035).
    last_ttl: Option<u32>,
    last_owner: Owner,
}

/// Collects records and problems while reading a zone and the files it includes.
struct Builder {
    origin: Name,
    tree: Tree,
    /// Every file read; `Loc::file` indexes it.
    files: Vec<PathBuf>,
    soa: Option<(Record, Loc)>,
    problems: Vec<Problem>,
}

impl Builder {
    fn problem(&mut self, loc: Loc, message: impl Into<String>) {
        let file = self
            .files
            .get(loc.file)
            .map_or(Path::new(""), PathBuf::as_path);
        self.problems
            .push(Problem::at(file, loc.line, None, message));
    }

    /// `loc` as seen from a message about `from`: just the line when in the same file.
    fn place(&self, loc: Loc, from: Loc) -> String {
        match self.files.get(loc.file) {
            Some(file) if loc.file != from.file => format!("{}:{}", file.display(), loc.line),
            _ => format!("line {}", loc.line),
        }
    }

    /// Reads one file's text; `including` holds the files being read, for loop checks.
    fn read(&mut self, text: &str, file: usize, mut cx: Context, including: &mut Vec<PathBuf>) {
        for entry in split(text) {
            let loc = Loc {
                file,
                line: entry.line,
            };
            match entry.text {
                Err(message) => self.problem(loc, message),
                Ok(text) if text.starts_with('$') => self.directive(&text, loc, &mut cx, including),
                Ok(text) => self.record(&text, loc, &mut cx),
            }
        }
    }

    fn directive(&mut self, text: &str, loc: Loc, cx: &mut Context, including: &mut Vec<PathBuf>) {
        let words = words(text);
        let Some((directive, args)) = words.split_first() else {
            return;
        };
        let is = |name: &str| directive.eq_ignore_ascii_case(name);
        if is("$ORIGIN") {
            let [origin] = args else {
                return self.problem(loc, "$ORIGIN takes exactly one domain name");
            };
            match Name::parse(origin, Some(&cx.origin)) {
                Ok(mut origin) => {
                    origin.set_fqdn(true);
                    cx.origin = origin;
                }
                Err(err) => self.problem(loc, format!("invalid $ORIGIN {origin:?}: {err}")),
            }
        } else if is("$TTL") {
            let [ttl] = args else {
                return self.problem(loc, "$TTL takes exactly one TTL");
            };
            match parse_ttl(ttl) {
                Ok(ttl) => cx.default_ttl = Some(ttl),
                Err(err) => self.problem(loc, format!("invalid $TTL {ttl:?}: {err}")),
            }
        } else if is("$INCLUDE") {
            match args {
                [file] => self.include(file, None, loc, cx, including),
                [file, origin] => self.include(file, Some(origin), loc, cx, including),
                _ => self.problem(loc, "$INCLUDE takes a file name and an optional origin"),
            }
        } else {
            self.problem(
                loc,
                format!("unsupported directive {directive}: only $ORIGIN, $TTL and $INCLUDE are"),
            );
        }
    }

    /// Reads an included file in place; it starts from the including file's context
    /// and its `$ORIGIN`/`$TTL` do not leak back (RFC 1035 section 5.1).
    fn include(
        &mut self,
        file: &str,
        origin: Option<&str>,
        loc: Loc,
        cx: &Context,
        including: &mut Vec<PathBuf>,
    ) {
        let mut child = cx.clone();
        if let Some(origin) = origin {
            match Name::parse(origin, Some(&cx.origin)) {
                Ok(mut origin) => {
                    origin.set_fqdn(true);
                    child.origin = origin;
                }
                Err(err) => {
                    return self.problem(loc, format!("invalid $INCLUDE origin {origin:?}: {err}"));
                }
            }
        }
        if including.len() > MAX_INCLUDE_DEPTH {
            return self.problem(
                loc,
                format!("$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep"),
            );
        }
        let parent = self
            .files
            .get(loc.file)
            .and_then(|path| path.parent())
            .unwrap_or(Path::new(""));
        let path = parent.join(file);
        let identity = canonical(&path);
        if including.contains(&identity) {
            return self.problem(
                loc,
                format!("$INCLUDE loop: {} is already being read", path.display()),
            );
        }
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                return self.problem(
                    loc,
                    format!("cannot read included file {}: {err}", path.display()),
                );
            }
        };
        self.files.push(path);
        including.push(identity);
        self.read(&text, self.files.len() - 1, child, including);
        including.pop();
    }

    /// Parses one record entry with hickory, its context (origin, default TTL, owner)
    /// made explicit so the entry parses on its own and errors map to its line.
    fn record(&mut self, text: &str, loc: Loc, cx: &mut Context) {
        let (owner, rest) = if text.starts_with([' ', '\t']) {
            (cx.last_owner.clone(), text)
        } else {
            let end = text
                .find(|c: char| c.is_whitespace() || c == ';')
                .unwrap_or(text.len());
            let (token, rest) = text.split_at(end);
            let owner = if token == "@" {
                Owner::Name(cx.origin.clone())
            } else {
                match Name::parse(token, Some(&cx.origin)) {
                    Ok(mut name) => {
                        name.set_fqdn(true);
                        Owner::Name(name)
                    }
                    Err(err) => {
                        self.problem(loc, format!("invalid owner name {token:?}: {err}"));
                        Owner::Invalid
                    }
                }
            };
            cx.last_owner = owner.clone();
            (owner, rest)
        };
        if matches!(owner, Owner::Unset) {
            return self.problem(
                loc,
                "record has no owner name: it starts with a blank and no record precedes it",
            );
        }

        // The owner is parsed above; hickory sees `@` and the real owner is set after,
        // so no name has to survive a round trip through text.
        let mut input = String::with_capacity(rest.len() + 24);
        if let Some(ttl) = cx.default_ttl.or(cx.last_ttl) {
            let _ = writeln!(input, "$TTL {ttl}");
        }
        input.push('@');
        input.push_str(rest);
        input.push('\n');
        let records: Vec<Record> = match Parser::new(input, None, Some(cx.origin.clone())).parse() {
            Ok((_, sets)) => sets.into_values().flatten().collect(),
            Err(err) => return self.problem(loc, format!("invalid record: {err}")),
        };
        let mut records = records.into_iter();
        let (Some(mut record), None) = (records.next(), records.next()) else {
            return self.problem(loc, "expected one record: [TTL] [class] type data");
        };
        cx.last_ttl = Some(record.ttl);
        if let Owner::Name(owner) = owner {
            record.name = owner;
            self.add(record, loc);
        }
    }

    /// Checks a parsed record against the zone and stores it.
    fn add(&mut self, record: Record, loc: Loc) {
        let rtype = record.record_type();
        if record.dns_class != DNSClass::IN {
            return self.problem(
                loc,
                format!("class {} is not supported: only IN", record.dns_class),
            );
        }
        let Some(key) = Key::new(&record.name) else {
            return self.problem(loc, format!("owner name {} is too long", record.name));
        };
        let Some(depth) = self.tree.depth(&key) else {
            return self.problem(
                loc,
                format!("{} is outside the zone {}", record.name, self.origin),
            );
        };
        match rtype {
            RecordType::SOA if depth > 0 => {
                return self.problem(
                    loc,
                    format!(
                        "SOA record at {} must be at the zone apex {}",
                        record.name, self.origin
                    ),
                );
            }
            RecordType::SOA => {
                if let Some((_, first)) = &self.soa {
                    let first = self.place(*first, loc);
                    return self.problem(
                        loc,
                        format!(
                            "second SOA record (the first is at {first}): a zone has exactly one"
                        ),
                    );
                }
                self.soa = Some((record.clone(), loc));
            }
            RecordType::NS if record.name.is_wildcard() => {
                return self.problem(loc, "NS records at a wildcard name are not supported");
            }
            _ => {}
        }

        let id = self.tree.ensure(&key, 0, depth);
        let node = &self.tree.nodes[id];
        // RFC 1034 section 3.6.2 / RFC 2181 section 10.1: a CNAME owner has no other data.
        let conflict = if rtype == RecordType::CNAME {
            match node.rrset(RecordType::CNAME) {
                Some(set) if set.records.contains(&record) => return,
                Some(set) => Some(format!(
                    "second CNAME at {} (the first is at {}): a name has at most one",
                    record.name,
                    self.place(set.first, loc)
                )),
                None => node
                    .rrsets
                    .iter()
                    .find(|set| !is_dnssec_meta(set.rtype))
                    .map(|set| {
                        format!(
                            "CNAME at {} beside its {} record at {}: a CNAME owner can have no other data",
                            record.name,
                            set.rtype,
                            self.place(set.first, loc)
                        )
                    }),
            }
        } else if is_dnssec_meta(rtype) {
            None
        } else {
            node.rrset(RecordType::CNAME).map(|set| {
                format!(
                    "{rtype} record at {} beside its CNAME at {}: a CNAME owner can have no other data",
                    record.name,
                    self.place(set.first, loc)
                )
            })
        };
        match conflict {
            Some(message) => self.problem(loc, message),
            None => self.tree.nodes[id].insert(record, loc),
        }
    }

    fn finish(mut self) -> Result<Zone, Vec<Problem>> {
        let soa = match self.soa.take() {
            None => {
                let file = self.files.first().map_or(Path::new(""), PathBuf::as_path);
                let message = format!("no SOA record at the zone apex {}", self.origin);
                self.problems.push(Problem::file(file, message));
                None
            }
            Some((_, loc)) if self.tree.nodes[APEX].rrset(RecordType::NS).is_none() => {
                let message = format!("no NS records at the zone apex {}", self.origin);
                self.problem(loc, message);
                None
            }
            Some((soa, _)) => Some(soa),
        };
        let Some(soa) = soa.filter(|_| self.problems.is_empty()) else {
            return Err(self.problems);
        };
        self.tree.link_cuts();
        let mut negative_soa = soa.clone();
        if let RData::SOA(data) = &soa.data {
            negative_soa.ttl = soa.ttl.min(data.minimum);
        }
        Ok(Zone {
            origin: self.origin,
            tree: self.tree,
            soa,
            negative_soa,
        })
    }
}

/// A path's identity for `$INCLUDE` loop checks (the path itself if it cannot be resolved).
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// One entry of a zone file (a record or directive) with the line it starts on. The
/// text is flattened to one line: comments dropped, and parentheses and the line
/// breaks inside them turned into blanks, quoted strings kept as written.
struct Entry {
    line: u64,
    text: Result<String, &'static str>,
}

/// Splits a zone file into entries, following RFC 1035 section 5.1 quoting: `;`
/// comments, `"` strings with `\` escapes, and `( )` continuing an entry across lines.
/// Blank and comment-only lines yield nothing.
///
/// Flattening also lets hickory read quoted strings that sit inside parentheses (as in
/// long DKIM TXT records): its lexer only recognises quotes outside them.
fn split(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut current = String::new();
    let (mut line, mut start_line) = (1_u64, 1_u64);
    let mut depth = 0_u32;
    let (mut quoted, mut comment, mut escaped, mut content) = (false, false, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if escaped {
            escaped = false;
            // An escaped line break outside quotes still ends the line, as in hickory.
            if c != '\n' || quoted {
                current.push(c);
                continue;
            }
        }
        if comment {
            if c != '\n' {
                continue;
            }
            comment = false;
        } else if quoted {
            match c {
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            current.push(c);
            continue;
        }
        match c {
            ';' => comment = true,
            '\n' if depth == 0 => {
                if content {
                    entries.push(Entry {
                        line: start_line,
                        text: Ok(std::mem::take(&mut current)),
                    });
                }
                current.clear();
                (start_line, content) = (line, false);
            }
            '\n' | '\r' => current.push(' '),
            '(' | ')' => {
                depth = if c == '(' {
                    depth.saturating_add(1)
                } else {
                    depth.saturating_sub(1)
                };
                content = true;
                current.push(' ');
            }
            c => {
                content |= !c.is_whitespace();
                escaped = c == '\\';
                quoted = c == '"';
                current.push(c);
            }
        }
    }
    if content {
        let text = if quoted {
            Err("quoted string is never closed")
        } else if depth > 0 {
            Err("'(' is never closed")
        } else {
            Ok(current)
        };
        entries.push(Entry {
            line: start_line,
            text,
        });
    }
    entries
}

/// Splits a directive entry into words: whitespace-separated, `"` quoting, `;` comments.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == '(' || c == ')' {
            chars.next();
        } else if c == ';' {
            while chars.next_if(|&c| c != '\n').is_some() {}
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(c) =
                chars.next_if(|&c| !(c.is_whitespace() || matches!(c, ';' | '(' | ')')))
            {
                word.push(c);
            }
            words.push(word);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::rr::rdata::CNAME;

    const PATH: &str = "zones/example.com.zone";

    /// A zone exercising every kind of data and lookup outcome; line numbers matter to
    /// the tests below.
    const GOOD: &str = r#"; example.com, for tests
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. (
        2024010101 ; serial
        7200       ; refresh
        900        ; retry
        1209600    ; expire
        300 )      ; minimum
    IN NS ns1
    IN NS ns2.example.com.
    IN MX 10 mail
    IN TXT "v=spf1 mx -all" "with \"quotes\" ; not a comment"
ns1 IN A 192.0.2.1
ns2 IN A 192.0.2.2
www 300 IN A 192.0.2.10
    IN AAAA 2001:db8::10
mail IN A 192.0.2.25
alias IN CNAME www
a.b.c IN A 192.0.2.30
*.wild IN A 192.0.2.40
*.wild IN TXT "wild"
*.cn IN CNAME www
sub IN NS ns1.sub
sub IN NS ns.elsewhere.net.
ns1.sub IN A 192.0.2.53
ns1.sub IN AAAA 2001:db8::53
deep.sub IN TXT "hidden below the cut"
"#;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("test name")
    }

    fn origin() -> Name {
        name("example.com.")
    }

    fn good() -> Zone {
        match Zone::parse(&origin(), GOOD, Path::new(PATH)) {
            Ok(zone) => zone,
            Err(problems) => panic!("good zone rejected: {problems:#?}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match Zone::parse(&origin(), text, Path::new(PATH)) {
            Ok(_) => panic!("zone accepted"),
            Err(problems) => problems,
        }
    }

    /// The only problem of a zone: (line, message).
    fn only_problem(text: &str) -> (Option<u64>, String) {
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].file, Path::new(PATH));
        (problems[0].line, problems[0].message.clone())
    }

    /// A valid zone head (SOA on line 1, NS on line 2) followed by `rest`, which
    /// therefore starts on line 3.
    fn zone_with(rest: &str) -> String {
        format!("@ 3600 IN SOA ns1 hostmaster 1 7200 900 1209600 300\n@ 3600 IN NS ns1\n{rest}")
    }

    fn answer(lookup: Lookup<'_>) -> Vec<Record> {
        match lookup {
            Lookup::Answer(records) => records.into_owned(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn a(record: &Record) -> Option<Ipv4Addr> {
        match &record.data {
            RData::A(a) => Some(a.0),
            _ => None,
        }
    }

    #[test]
    fn accessors() {
        let zone = good();
        assert!(zone.origin().eq_case(&origin()));
        assert_eq!(zone.soa().record_type(), RecordType::SOA);
        assert_eq!(zone.soa().ttl, 3600);
        assert_eq!(zone.negative_soa().ttl, 300);
        assert_eq!(zone.negative_soa().data, zone.soa().data);
        assert_eq!(zone.apex_ns().len(), 2);
        assert!(zone.contains(&name("EXAMPLE.com.")));
        assert!(zone.contains(&name("x.y.example.com.")));
        assert!(!zone.contains(&name("example.org.")));
        assert!(!zone.contains(&name("com.")));
        assert!(!zone.contains(&name("badexample.com.")));
    }

    #[test]
    fn origin_is_lower_cased() {
        let text = zone_with("");
        let zone = Zone::parse(&name("Example.COM"), &text, Path::new(PATH)).expect("zone");
        assert!(zone.origin().eq_case(&origin()));
        assert!(zone.origin().is_fqdn());
    }

    #[test]
    fn exact_answer_is_case_insensitive_and_borrowed() {
        let zone = good();
        let Lookup::Answer(Cow::Borrowed(records)) =
            zone.lookup(&name("WWW.Example.com."), RecordType::A)
        else {
            panic!("expected a borrowed answer");
        };
        assert_eq!(records.len(), 1);
        assert_eq!(a(&records[0]), Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(records[0].ttl, 300);
        assert!(records[0].name.eq_case(&name("www.example.com.")));
        // The TTL-less line after it inherits its owner and, with $TTL set, $TTL.
        let aaaa = answer(zone.lookup(&name("www.example.com."), RecordType::AAAA));
        assert_eq!(aaaa[0].ttl, 3600);
        assert_eq!(
            aaaa[0].data,
            RData::AAAA("2001:db8::10".parse::<Ipv6Addr>().expect("v6").into())
        );
    }

    #[test]
    fn apex_records() {
        let zone = good();
        let mx = answer(zone.lookup(&origin(), RecordType::MX));
        assert_eq!(mx.len(), 1);
        let txt = answer(zone.lookup(&origin(), RecordType::TXT));
        let RData::TXT(txt) = &txt[0].data else {
            panic!("not TXT");
        };
        let strings: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
        assert_eq!(
            strings,
            [
                &b"v=spf1 mx -all"[..],
                &b"with \"quotes\" ; not a comment"[..]
            ]
        );
        assert_eq!(answer(zone.lookup(&origin(), RecordType::SOA)).len(), 1);
        assert!(matches!(
            zone.lookup(&origin(), RecordType::AAAA),
            Lookup::NoData
        ));
    }

    #[test]
    fn cname() {
        let zone = good();
        let Lookup::Cname(cname) = zone.lookup(&name("alias.example.com."), RecordType::A) else {
            panic!("expected a CNAME");
        };
        assert_eq!(cname.data, RData::CNAME(CNAME(name("www.example.com."))));
        let records = answer(zone.lookup(&name("alias.example.com."), RecordType::CNAME));
        assert_eq!(records.len(), 1);
        let any = answer(zone.lookup(&name("alias.example.com."), RecordType::ANY));
        assert_eq!(any.len(), 1);
        assert_eq!(any[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn no_data_at_existing_name_and_empty_non_terminal() {
        let zone = good();
        assert!(matches!(
            zone.lookup(&name("www.example.com."), RecordType::MX),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&name("www.example.com."), RecordType::CNAME),
            Lookup::NoData
        ));
        for ent in ["b.c.example.com.", "c.example.com.", "C.example.com."] {
            assert!(
                matches!(zone.lookup(&name(ent), RecordType::A), Lookup::NoData),
                "{ent}"
            );
            assert!(
                matches!(zone.lookup(&name(ent), RecordType::ANY), Lookup::NoData),
                "{ent}"
            );
        }
        let leaf = answer(zone.lookup(&name("a.b.c.example.com."), RecordType::A));
        assert_eq!(a(&leaf[0]), Some(Ipv4Addr::new(192, 0, 2, 30)));
    }

    #[test]
    fn nxdomain() {
        let zone = good();
        for missing in [
            "nope.example.com.",
            "x.www.example.com.",
            "x.b.c.example.com.",
        ] {
            assert!(
                matches!(zone.lookup(&name(missing), RecordType::A), Lookup::NxDomain),
                "{missing}"
            );
        }
        // Outside the zone: nothing to say.
        assert!(matches!(
            zone.lookup(&name("www.example.org."), RecordType::A),
            Lookup::NxDomain
        ));
    }

    #[test]
    fn wildcard_synthesis_keeps_query_case() {
        let zone = good();
        let qname = name("Foo.Wild.example.COM.");
        let records = match zone.lookup(&qname, RecordType::A) {
            Lookup::Answer(Cow::Owned(records)) => records,
            other => panic!("expected an owned answer, got {other:?}"),
        };
        assert_eq!(records.len(), 1);
        assert!(records[0].name.eq_case(&qname));
        assert_eq!(a(&records[0]), Some(Ipv4Addr::new(192, 0, 2, 40)));
        // Deeper names have the same closest encloser.
        let deeper = name("a.b.wild.example.com.");
        assert!(
            answer(zone.lookup(&deeper, RecordType::TXT))[0]
                .name
                .eq_case(&deeper)
        );
        assert!(matches!(
            zone.lookup(&qname, RecordType::MX),
            Lookup::NoData
        ));
        // ANY gives one RRset, A (type 1) before TXT (type 16).
        let any = answer(zone.lookup(&qname, RecordType::ANY));
        assert_eq!(any[0].record_type(), RecordType::A);
        assert!(any[0].name.eq_case(&qname));
        // The wildcard's parent exists but has no data.
        assert!(matches!(
            zone.lookup(&name("wild.example.com."), RecordType::A),
            Lookup::NoData
        ));
    }

    #[test]
    fn wildcard_cname() {
        let zone = good();
        let qname = name("X.cn.example.com.");
        let Lookup::Cname(Cow::Owned(cname)) = zone.lookup(&qname, RecordType::AAAA) else {
            panic!("expected an owned CNAME");
        };
        assert!(cname.name.eq_case(&qname));
        assert_eq!(cname.data, RData::CNAME(CNAME(name("www.example.com."))));
    }

    #[test]
    fn wildcard_does_not_cover_existing_names() {
        let text = zone_with("*.x 60 IN A 192.0.2.1\na.b.x 60 IN A 192.0.2.2\n");
        let zone = Zone::parse(&origin(), &text, Path::new(PATH)).expect("zone");
        // b.x exists as an empty non-terminal: NODATA, not the wildcard.
        assert!(matches!(
            zone.lookup(&name("b.x.example.com."), RecordType::A),
            Lookup::NoData
        ));
        // Below b.x the closest encloser is b.x, which has no wildcard child.
        assert!(matches!(
            zone.lookup(&name("z.b.x.example.com."), RecordType::A),
            Lookup::NxDomain
        ));
        let other = answer(zone.lookup(&name("other.x.example.com."), RecordType::A));
        assert_eq!(a(&other[0]), Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn minimal_any() {
        let zone = good();
        // Apex: NS (type 2) comes before SOA, MX and TXT.
        let any = answer(zone.lookup(&origin(), RecordType::ANY));
        assert_eq!(any.len(), 2);
        assert!(any.iter().all(|r| r.record_type() == RecordType::NS));
        let any = answer(zone.lookup(&name("www.example.com."), RecordType::ANY));
        assert_eq!(any.len(), 1);
        assert_eq!(any[0].record_type(), RecordType::A);
    }

    #[test]
    fn delegation_with_glue() {
        let zone = good();
        for (qname, qtype) in [
            ("sub.example.com.", RecordType::A),
            ("sub.example.com.", RecordType::NS),
            ("sub.example.com.", RecordType::ANY),
            ("www.sub.example.com.", RecordType::A),
            ("Deep.Sub.example.com.", RecordType::TXT),
            ("ns1.sub.example.com.", RecordType::A),
            ("deep.sub.example.com.", RecordType::DS),
        ] {
            let Lookup::Delegation { ns, glue } = zone.lookup(&name(qname), qtype) else {
                panic!("{qname} {qtype}: expected a delegation");
            };
            assert_eq!(ns.len(), 2, "{qname}");
            assert!(ns.iter().all(|r| r.name.eq_case(&name("sub.example.com."))));
            let mut types: Vec<RecordType> = glue.iter().map(Record::record_type).collect();
            types.sort_by_key(|t| u16::from(*t));
            assert_eq!(types, [RecordType::A, RecordType::AAAA], "{qname}");
            assert!(glue.iter().all(|r| r.name == name("ns1.sub.example.com.")));
        }
        // DS at the cut is answered from the parent side: here, there is none.
        assert!(matches!(
            zone.lookup(&name("sub.example.com."), RecordType::DS),
            Lookup::NoData
        ));
    }

    #[test]
    fn nested_cut_refers_to_the_topmost() {
        let text = zone_with(
            "a 60 IN NS ns.a\nns.a 60 IN A 192.0.2.1\nb.a 60 IN NS ns.b.a\nns.b.a 60 IN A 192.0.2.2\n",
        );
        let zone = Zone::parse(&origin(), &text, Path::new(PATH)).expect("zone");
        let Lookup::Delegation { ns, glue } =
            zone.lookup(&name("x.b.a.example.com."), RecordType::A)
        else {
            panic!("expected a delegation");
        };
        assert!(ns[0].name == name("a.example.com."));
        assert_eq!(glue.len(), 1);
        assert_eq!(a(&glue[0]), Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn reserved_name_answers_no_data() {
        let mut zone = good();
        let geo = name("cdn.geo.example.com.");
        assert!(matches!(zone.lookup(&geo, RecordType::A), Lookup::NxDomain));
        assert_eq!(zone.reserve(&geo), Ok(()));
        assert_eq!(zone.reserve(&geo), Ok(()), "reserving twice is harmless");
        assert!(matches!(zone.lookup(&geo, RecordType::A), Lookup::NoData));
        assert!(matches!(
            zone.lookup(&name("CDN.geo.example.com."), RecordType::TXT),
            Lookup::NoData
        ));
        // Its parent becomes an empty non-terminal.
        assert!(matches!(
            zone.lookup(&name("geo.example.com."), RecordType::A),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&name("x.cdn.geo.example.com."), RecordType::A),
            Lookup::NxDomain
        ));
        // A reserved name below a wildcard's parent blocks the wildcard for itself only.
        let under_wild = name("geo.wild.example.com.");
        assert_eq!(zone.reserve(&under_wild), Ok(()));
        assert!(matches!(
            zone.lookup(&under_wild, RecordType::A),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&name("other.wild.example.com."), RecordType::A),
            Lookup::Answer(_)
        ));
    }

    #[test]
    fn reserved_wildcard_does_not_match_queries() {
        let mut zone = good();
        assert_eq!(zone.reserve(&name("*.edge.example.com.")), Ok(()));
        assert!(matches!(
            zone.lookup(&name("edge.example.com."), RecordType::A),
            Lookup::NoData
        ));
        for qname in ["x.edge.example.com.", "*.edge.example.com."] {
            assert!(
                matches!(zone.lookup(&name(qname), RecordType::A), Lookup::NxDomain),
                "{qname}"
            );
        }
    }

    #[test]
    fn reserve_conflicts_with_static_records() {
        let mut zone = good();
        let records = |line| Err(Conflict::Records(line));
        assert_eq!(zone.reserve(&name("www.example.com.")), records(16));
        assert_eq!(zone.reserve(&name("WWW.example.com.")), records(16));
        assert_eq!(zone.reserve(&name("example.com.")), records(4));
        assert_eq!(zone.reserve(&name("*.wild.example.com.")), records(21));
        // An empty non-terminal has no static records of its own.
        assert_eq!(zone.reserve(&name("c.example.com.")), Ok(()));
        // Outside the zone: left alone.
        assert_eq!(zone.reserve(&name("www.example.org.")), Ok(()));
        assert!(!zone.contains(&name("www.example.org.")));
    }

    #[test]
    fn a_name_at_or_below_a_cut_cannot_be_reserved() {
        let mut zone = good();
        for below in [
            "sub.example.com.",
            "geo.x.sub.example.com.",
            "*.sub.example.com.",
        ] {
            assert_eq!(
                zone.reserve(&name(below)),
                Err(Conflict::Delegated(24)),
                "{below}"
            );
        }
        // Nothing was added: the names still answer as referrals.
        assert!(matches!(
            zone.lookup(&name("geo.x.sub.example.com."), RecordType::A),
            Lookup::Delegation { .. }
        ));
    }

    #[test]
    fn a_wildcard_cannot_shadow_static_names_below_it() {
        let mut zone = good();
        // `a.b.c` exists: `*.b.c` could never answer for it.
        assert_eq!(
            zone.reserve(&name("*.b.c.example.com.")),
            Err(Conflict::Shadowed(20))
        );
        assert_eq!(
            zone.reserve(&name("*.example.com.")),
            Err(Conflict::Shadowed(14))
        );
        // A byte sequence that only looks like the base is not below it.
        assert!(!is_strictly_below(b"\x02xb\x01c", b"\x01b\x01c"));
        assert!(is_strictly_below(b"\x01a\x01b\x01c", b"\x01b\x01c"));
        assert!(!is_strictly_below(b"\x01b\x01c", b"\x01b\x01c"));
        // Nothing below: fine.
        assert_eq!(zone.reserve(&name("*.fresh.example.com.")), Ok(()));
    }

    #[test]
    fn ttl_defaults_to_previous_record_without_dollar_ttl() {
        let text = "@ 7200 IN SOA ns1 hostmaster 1 7200 900 1209600 600\n\
                    @ IN NS ns1\n\
                    ns1 60 IN A 192.0.2.1\n\
                    www IN A 192.0.2.2\n";
        let zone = Zone::parse(&origin(), text, Path::new(PATH)).expect("zone");
        assert_eq!(zone.apex_ns()[0].ttl, 7200);
        assert_eq!(zone.negative_soa().ttl, 600);
        let www = answer(zone.lookup(&name("www.example.com."), RecordType::A));
        assert_eq!(www[0].ttl, 60);
    }

    #[test]
    fn origin_directive_and_relative_names() {
        let text = zone_with(
            "$ORIGIN sub2\nwww 60 IN CNAME host\n$ORIGIN example.com.\nhost 60 IN A 192.0.2.9\n",
        );
        let zone = Zone::parse(&origin(), &text, Path::new(PATH)).expect("zone");
        let Lookup::Cname(cname) = zone.lookup(&name("www.sub2.example.com."), RecordType::A)
        else {
            panic!("expected a CNAME");
        };
        assert_eq!(
            cname.data,
            RData::CNAME(CNAME(name("host.sub2.example.com.")))
        );
        assert!(matches!(
            zone.lookup(&name("host.example.com."), RecordType::A),
            Lookup::Answer(_)
        ));
    }

    #[test]
    fn duplicate_records_are_merged() {
        let text =
            zone_with("www 60 IN A 192.0.2.1\nwww 60 IN A 192.0.2.1\nwww 60 IN A 192.0.2.2\n");
        let zone = Zone::parse(&origin(), &text, Path::new(PATH)).expect("zone");
        assert_eq!(
            answer(zone.lookup(&name("www.example.com."), RecordType::A)).len(),
            2
        );
    }

    #[test]
    fn syntax_error_reports_its_line() {
        let (line, message) = only_problem(&zone_with(
            "ok 60 IN A 192.0.2.1\nbad 60 IN A 192.0.2.999\n",
        ));
        assert_eq!(line, Some(4));
        assert!(message.contains("invalid record"), "{message}");
        let (line, message) = only_problem(&zone_with("\n\nbad 60 IN BOGUS x\n"));
        assert_eq!(line, Some(5));
        assert!(message.contains("BOGUS"), "{message}");
    }

    #[test]
    fn out_of_zone_record() {
        let (line, message) = only_problem(&zone_with(
            "www 60 IN A 192.0.2.1\nwww.example.org. 60 IN A 192.0.2.1\n",
        ));
        assert_eq!(line, Some(4));
        assert!(
            message.contains("outside the zone example.com."),
            "{message}"
        );
    }

    #[test]
    fn missing_soa() {
        let (line, message) = only_problem("@ 60 IN NS ns1\nns1 60 IN A 192.0.2.1\n");
        assert_eq!(line, None);
        assert!(message.contains("no SOA"), "{message}");
        let problem = &problems("@ 60 IN NS ns1\n")[0];
        assert_eq!(
            problem.to_string(),
            "zones/example.com.zone: no SOA record at the zone apex example.com."
        );
    }

    #[test]
    fn two_soas_and_soa_off_apex() {
        let (line, message) = only_problem(&zone_with(
            "\n@ 60 IN SOA ns1 hostmaster 2 7200 900 1209600 300\n",
        ));
        assert_eq!(line, Some(4));
        assert!(
            message.contains("second SOA") && message.contains("line 1"),
            "{message}"
        );
        let (line, message) = only_problem(&zone_with(
            "www 60 IN SOA ns1 hostmaster 2 7200 900 1209600 300\n",
        ));
        assert_eq!(line, Some(3));
        assert!(message.contains("apex"), "{message}");
    }

    #[test]
    fn cname_beside_other_data() {
        let (line, message) =
            only_problem(&zone_with("www 60 IN A 192.0.2.1\nwww 60 IN CNAME other\n"));
        assert_eq!(line, Some(4));
        assert!(
            message.contains("CNAME") && message.contains("line 3"),
            "{message}"
        );
        let (line, message) =
            only_problem(&zone_with("www 60 IN CNAME other\n  60 IN TXT \"x\"\n"));
        assert_eq!(line, Some(4));
        assert!(message.contains("TXT record"), "{message}");
        let (line, message) =
            only_problem(&zone_with("www 60 IN CNAME one\nwww 60 IN CNAME two\n"));
        assert_eq!(line, Some(4));
        assert!(message.contains("second CNAME"), "{message}");
        // At the apex, CNAME always meets SOA and NS.
        let (line, _) = only_problem(&zone_with("@ 60 IN CNAME elsewhere.net.\n"));
        assert_eq!(line, Some(3));
    }

    #[test]
    fn missing_apex_ns() {
        let text = "\n@ 60 IN SOA ns1 hostmaster 1 7200 900 1209600 300\nns1 60 IN A 192.0.2.1\n";
        let (line, message) = only_problem(text);
        assert_eq!(line, Some(2), "reported at the SOA");
        assert!(
            message.contains("no NS records at the zone apex"),
            "{message}"
        );
    }

    #[test]
    fn class_other_than_in() {
        let (line, message) = only_problem(&zone_with("www 60 CH A 192.0.2.1\n"));
        assert_eq!(line, Some(3));
        assert!(message.contains("class CH"), "{message}");
    }

    #[test]
    fn multi_line_soa_then_bad_record() {
        let text = "$TTL 1h\n\
                    @ IN SOA ns1 hostmaster (\n\
                    \t1 ; serial (first\n\
                    \t7200 900 ; refresh ) retry\n\
                    \t1209600\n\
                    \t300 ) ; done\n\
                    \tIN NS ns1 ; line 7\n\
                    ns1 IN A 192.0.2.1\n\
                    www IN A not-an-address\n";
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, Some(9));
        assert!(
            problems[0].message.contains("IPv4"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn quoted_strings_inside_parentheses() {
        let text = zone_with(
            "dkim 60 IN TXT ( \"v=DKIM1; k=rsa; \" ; first part\n\
             \t\"p=MIIB(x)\" )\n\
             after 60 IN A 192.0.2.1\n",
        );
        let zone = Zone::parse(&origin(), &text, Path::new(PATH)).expect("zone");
        let txt = answer(zone.lookup(&name("dkim.example.com."), RecordType::TXT));
        let RData::TXT(txt) = &txt[0].data else {
            panic!("not TXT");
        };
        let strings: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
        assert_eq!(strings, [&b"v=DKIM1; k=rsa; "[..], &b"p=MIIB(x)"[..]]);
        assert!(matches!(
            zone.lookup(&name("after.example.com."), RecordType::A),
            Lookup::Answer(_)
        ));
    }

    #[test]
    fn all_problems_reported_at_once() {
        let text = zone_with(
            "a 60 IN A 1.2.3\n\
             b.example.net. 60 IN A 192.0.2.1\n\
             c 60 IN CNAME x\n\
             c 60 IN A 192.0.2.1\n\
             $BOGUS\n\
             d 60 IN A 192.0.2.4\n\
             \x20 60 IN AAAA nope\n",
        );
        let lines: Vec<Option<u64>> = problems(&text).iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(3), Some(4), Some(6), Some(7), Some(9)]);
    }

    #[test]
    fn splitter_errors() {
        let (line, message) =
            only_problem(&zone_with("ok 60 IN A 192.0.2.1\nbad 60 IN TXT \"open\n"));
        assert_eq!(line, Some(4));
        assert!(message.contains("quoted string"), "{message}");
        let (line, message) = only_problem(&zone_with("bad 60 IN MX ( 10 mail\n"));
        assert_eq!(line, Some(3));
        assert!(message.contains("'('"), "{message}");
        let problems = problems("  60 IN A 192.0.2.1\n");
        assert_eq!(
            problems[0].line,
            Some(1),
            "blank owner with no record before it"
        );
        assert!(
            problems[0].message.contains("no owner"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn split_tracks_lines_quotes_and_comments() {
        let entries = split("; c\n\na ( 1\n 2 ) ; x\n  b \"q;(\\\"\n\" \n\n c\r\nd");
        let got: Vec<(u64, Vec<&str>)> = entries
            .iter()
            .map(|e| {
                let text = e.text.as_deref().unwrap_or("ERR");
                (e.line, text.split_whitespace().collect())
            })
            .collect();
        assert_eq!(
            got,
            [
                (3, vec!["a", "1", "2"]),
                (5, vec!["b", "\"q;(\\\"", "\""]),
                (8, vec!["c"]),
                (9, vec!["d"]),
            ]
        );
        // A blank owner stays blank; quoted text stays as written.
        assert_eq!(entries[1].text, Ok("  b \"q;(\\\"\n\" ".to_string()));
    }

    #[test]
    fn unreadable_file() {
        let path = Path::new("/nonexistent/meridian/zone.db");
        let problems = Zone::load(&origin(), path).expect_err("no file");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, path);
        assert_eq!(problems[0].line, None);
        assert!(problems[0].message.starts_with("cannot read zone file: "));
    }

    #[test]
    fn include_reports_errors_against_the_included_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("example.com.zone");
        let included = dir.path().join("hosts.inc");
        fs::write(
            &main,
            zone_with("$INCLUDE hosts.inc\nafter 60 IN A 192.0.2.9\n$INCLUDE missing.inc\n"),
        )
        .expect("write");
        fs::write(&included, "ok 60 IN A 192.0.2.1\n\nbad 60 IN A 300.0.0.1\n").expect("write");
        let problems = Zone::load(&origin(), &main).expect_err("bad include");
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0].file, included);
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[1].file, main);
        assert_eq!(problems[1].line, Some(5));
        assert!(problems[1].message.contains("cannot read included file"));
    }

    #[test]
    fn include_with_origin_and_conflict_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("example.com.zone");
        fs::create_dir(dir.path().join("parts")).expect("mkdir");
        fs::write(
            dir.path().join("parts/lab.inc"),
            "$ORIGIN elsewhere.example.com.\nwww 60 IN A 192.0.2.7\n",
        )
        .expect("write");
        fs::write(
            &main,
            zone_with("$INCLUDE parts/lab.inc lab\nwww 60 IN A 192.0.2.8\n"),
        )
        .expect("write");
        let zone = Zone::load(&origin(), &main).expect("zone");
        // The include's $ORIGIN did not leak back into the including file.
        for (qname, last) in [("www.elsewhere.example.com.", 7), ("www.example.com.", 8)] {
            let records = answer(zone.lookup(&name(qname), RecordType::A));
            assert_eq!(a(&records[0]), Some(Ipv4Addr::new(192, 0, 2, last)));
        }

        fs::write(
            dir.path().join("parts/cname.inc"),
            "www 60 IN CNAME elsewhere\n",
        )
        .expect("write");
        fs::write(
            &main,
            zone_with("www 60 IN A 192.0.2.8\n$INCLUDE parts/cname.inc\n"),
        )
        .expect("write");
        let problems = Zone::load(&origin(), &main).expect_err("conflict");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].file, dir.path().join("parts/cname.inc"));
        assert_eq!(problems[0].line, Some(1));
        let first = format!("{}:3", main.display());
        assert!(
            problems[0].message.contains(&first),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn include_loop_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("example.com.zone");
        fs::write(&main, zone_with("$INCLUDE loop.inc\n")).expect("write");
        fs::write(dir.path().join("loop.inc"), "$INCLUDE loop.inc\n").expect("write");
        let problems = Zone::load(&origin(), &main).expect_err("loop");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].file, dir.path().join("loop.inc"));
        assert_eq!(problems[0].line, Some(1));
        assert!(problems[0].message.contains("loop"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in [
            "",
            "\0\u{1}\u{7f}",
            ")))",
            "$",
            "$ORIGIN",
            "$TTL x",
            "@ IN",
            "\"\\",
            "( ( (",
            "@ 60 IN A",
            "\\\n\\",
            "ÿ 60 IN A 192.0.2.1",
            "a..b 60 IN A 192.0.2.1",
        ] {
            let _ = Zone::parse(&origin(), text, Path::new(PATH));
            let _ = Zone::parse(&origin(), &zone_with(text), Path::new(PATH));
        }
        let zone = good();
        let long = Name::from_ascii(format!("{}example.com.", "a.".repeat(120))).expect("name");
        assert!(matches!(
            zone.lookup(&long, RecordType::A),
            Lookup::NxDomain
        ));
        assert!(matches!(
            zone.lookup(&Name::root(), RecordType::A),
            Lookup::NxDomain
        ));
    }
}
