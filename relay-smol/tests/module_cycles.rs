//! No import cycles between modules (issue #12): reads the sources of `fastpubsub-core` and
//! `fastpubsub-relay`, collects every `crate::…`, `super::…` and `self::…` path per module
//! file, and reports the cycles.
//!
//! Granularity: an edge from module `a::x::…` to `a::y::…` (different children `x`, `y` of
//! the same parent `a`) is an edge between the siblings `a::x` → `a::y`; the crate root's
//! children are the top-level modules. So `frame::deliver` ↔ `frame::publish` and
//! `broker` ↔ `ws` are both cycles, while a module using its own child or parent is not an
//! edge. Code in `#[cfg(test)]` modules and comments is not read (tests may depend on
//! anything; doc links are not dependencies).
//!
//! Cycles that are known and owned by someone are listed in `.ci/module-cycles.allow`
//! (`crate: a <-> b  # owner, why`). The check fails on any cycle not listed, and on a
//! listed one that is gone (remove its line). Run:
//! `cargo test -p fastpubsub-relay --test module_cycles` (well under a second).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `.rs` file under `src` with its module path (`src/a/mod.rs` and `src/a.rs` are
/// `a`; `src/lib.rs`, `src/main.rs` and `src/bin/*` are the root, not read for edges).
fn module_files(src: &Path) -> Vec<(Module, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap_or(&p);
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let file = parts.pop().unwrap_or_default();
            let stem = file.trim_end_matches(".rs").to_string();
            if parts.is_empty() && (stem == "lib" || stem == "main") {
                continue;
            }
            if stem != "mod" {
                parts.push(stem);
            }
            out.push((parts, p));
        }
    }
    out.sort();
    out
}

/// The code of a file without comments, string contents and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                in_str = true;
                out.push('"');
            }
            // A char literal such as '{' or '"' (not a lifetime: those have no closing quote).
            '\'' => {
                let mut look = chars.clone();
                let a = look.next();
                let b = look.next();
                let c2 = look.next();
                match (a, b, c2) {
                    (Some('\\'), Some(_), _) => {
                        // Escaped char: skip to the closing quote.
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\''), _) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push('\''),
                }
            }
            _ => out.push(c),
        }
    }
    strip_test_modules(&out)
}

/// Removes `#[cfg(test)] mod name { … }` blocks (brace-matched on comment- and
/// string-free code).
fn strip_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("#[cfg(test)]") {
        let after = &rest[i + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        let Some(open) = after.find(['{', ';']).filter(|_| is_mod) else {
            out.push_str(&rest[..i + "#[cfg(test)]".len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..i]);
        if after.as_bytes().get(open) == Some(&b';') {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (j, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Expands a use tree such as `crate::a::{b, c::{d, e}}` into full paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").to_string()];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use(&format!("{prefix}{p}")))
        .collect()
}

/// Every module path (`crate::…`, `super::…`, `self::…`) a file's code names.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` statements, with their brace groups.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let stmt_start = i + 4;
        let Some(end) = rest[stmt_start..].find(';') else {
            break;
        };
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            let tree = &rest[stmt_start..stmt_start + end];
            if tree.starts_with("crate::")
                || tree.starts_with("super::")
                || tree.starts_with("self::")
            {
                out.extend(expand_use(tree));
            }
        }
        rest = &rest[stmt_start..];
    }
    // Inline paths anywhere in the code.
    let bytes = code.as_bytes();
    for key in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(key) {
            let at = from + i;
            from = at + key.len();
            let prev = at.checked_sub(1).and_then(|p| bytes.get(p).copied());
            if prev
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b':')
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Resolves a path named in module `from` to the deepest existing module it reaches.
fn resolve(from: &Module, path: &str, modules: &BTreeSet<Module>) -> Option<Module> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut base: Module = match segs.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => from.get(..from.len().checked_sub(1)?)?.to_vec(),
        _ => return None,
    };
    let mut segs = segs.peekable();
    while segs.peek() == Some(&"super") {
        segs.next();
        base.pop()?;
    }
    for s in segs {
        let mut next = base.clone();
        next.push(s.to_string());
        if modules.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

/// The sibling edge for a dependency `from` → `to`, or `None` when one contains the other.
fn sibling_edge(from: &Module, to: &Module) -> Option<(Module, Module)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let a = from.get(..=common)?;
    let b = to.get(..=common)?;
    Some((a.to_vec(), b.to_vec()))
}

/// The cycles (strongly connected components of ≥ 2 modules) of one crate, each as its
/// sorted member names joined by ` <-> `.
fn cycles(src: &Path) -> BTreeSet<String> {
    let files = module_files(src);
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, path) in &files {
        let text = fs::read_to_string(path).unwrap_or_default();
        for p in paths_in(&code_of(&text)) {
            if let Some(to) = resolve(m, &p, &modules)
                && let Some((a, b)) = sibling_edge(m, &to)
            {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    // Tarjan's strongly connected components.
    struct St<'e> {
        edges: &'e BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        next: usize,
        out: BTreeSet<String>,
    }
    fn visit(st: &mut St<'_>, v: &Module) {
        st.index.insert(v.clone(), st.next);
        st.low.insert(v.clone(), st.next);
        st.next += 1;
        st.stack.push(v.clone());
        st.on.insert(v.clone());
        let succ: Vec<Module> = st.edges.get(v).into_iter().flatten().cloned().collect();
        for w in succ {
            if !st.index.contains_key(&w) {
                visit(st, &w);
                let lw = st.low[&w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if st.on.contains(&w) {
                let iw = st.index[&w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(&w);
                let done = &w == v;
                comp.push(w.join("::"));
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.insert(comp.join(" <-> "));
            }
        }
    }
    let mut st = St {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: BTreeSet::new(),
    };
    let nodes: Vec<Module> = edges.keys().cloned().collect();
    for v in nodes {
        if !st.index.contains_key(&v) {
            visit(&mut st, &v);
        }
    }
    st.out
}

/// The workspace root; `MODULE_CYCLES_ROOT` points the check at another tree (e.g. an
/// exported older commit, to compare).
fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("MODULE_CYCLES_ROOT") {
        return PathBuf::from(r);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn no_new_module_cycles() {
    let root = root();
    let mut found = BTreeSet::new();
    for (krate, dir) in [("core", "core/src"), ("relay-smol", "relay-smol/src")] {
        for c in cycles(&root.join(dir)) {
            found.insert(format!("{krate}: {c}"));
        }
    }
    let allow_text = fs::read_to_string(root.join(".ci/module-cycles.allow")).unwrap_or_default();
    let allowed: BTreeSet<String> = allow_text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    println!("module cycles found ({}):", found.len());
    for c in &found {
        println!(
            "  {c}{}",
            if allowed.contains(c) {
                "  (allow-listed)"
            } else {
                ""
            }
        );
    }
    let new: Vec<&String> = found.difference(&allowed).collect();
    let gone: Vec<&String> = allowed.difference(&found).collect();
    assert!(
        new.is_empty(),
        "new module cycle(s): {new:?}. Break them (move the shared item into a leaf module), \
         or, if that must wait, list them with an owner in .ci/module-cycles.allow"
    );
    assert!(
        gone.is_empty(),
        "allow-listed cycle(s) no longer exist: {gone:?}. Remove their lines from \
         .ci/module-cycles.allow"
    );
}

/// The checker itself finds what it must: a two-module cycle, a three-module one, sibling
/// edges below the root, and no edge for parent/child or test-only uses.
#[test]
fn the_checker_finds_cycles() {
    let dir = std::env::temp_dir().join(format!("fps-cycles-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let write = |p: &str, text: &str| {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        fs::write(path, text).expect("write");
    };
    write("lib.rs", "mod a; mod b; mod c; mod d; mod e; mod f;");
    write("a.rs", "use crate::b::X;\n// use crate::e::Nope;\n");
    write("b.rs", "pub fn f() { crate::a::g(); }");
    write("c.rs", "use crate::{d::{Y, Z as W}, e};");
    write("d.rs", "use super::e::Q;");
    write(
        "e/mod.rs",
        "mod x; mod y; use self::x::T; pub fn g() { crate::c::h() }",
    );
    write("e/x.rs", "use super::y::U; use super::*;");
    write(
        "e/y.rs",
        "use super::x::V;\n#[cfg(test)]\nmod tests { use crate::f::Z; fn t() { let _ = '{'; } }\n",
    );
    write("f.rs", "fn z() { let s = \"crate::a::X\"; }");
    let found = cycles(&dir);
    let expected: BTreeSet<String> = ["a <-> b", "c <-> d <-> e", "e::x <-> e::y"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
    let _ = fs::remove_dir_all(&dir);
}
