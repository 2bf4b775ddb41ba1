#!/usr/bin/env python3
"""Lists a library crate's public API from rustdoc's HTML output (`cargo doc --no-deps`).

    scripts/public-api.py [--doc-dir DIR] [--out-dir DIR] CRATE...

CRATE is a package name (platform-core) or a crate name (platform_core). Without --out-dir
the listing of each crate goes to standard output; with it, to DIR/<package name>.txt.

The listing starts at DIR/<crate_name>/index.html and follows the item tables of each module
page, so it sees exactly what the rendered documentation shows (redirect pages and pages left
over from an older build are never read). One line per item, sorted:

    <full path>  <kind>  <signature as rustdoc renders it, tags stripped, whitespace normalised>

Kinds: mod, reexport, struct, enum, union, trait, trait-alias, fn, type, const, static, macro,
attr-macro, derive-macro; members of a type: field, variant, variant-field, method,
assoc-const, assoc-type, impl (one line per trait implementation, with its associated types
and constants, not its methods, whose signatures the trait fixes); members of a trait:
required-method, provided-method, required-type, provided-type, required-const,
provided-const, impl (blanket implementations and those on foreign types; the others are on
the implementing type's line), dyn-compat. An inherent method in an impl block with its own
bounds, such as `impl<T: Clone> Wrapper<T>`, carries that header in brackets after its
signature. The line of a struct, enum, union or trait itself keeps its attributes, generics and
bounds but sums up its body as `{ ... }` (with rustdoc's `/* private fields */` where it shows
one). A deprecated item's signature starts with `#[deprecated]`. Auto trait and blanket
implementations shown on a type's page, and the methods a type gets through Deref, are left out.

Python 3 standard library only. The signatures are rustdoc's rendering: a new toolchain can
change it without any change to the API.
"""

import argparse
import os
import re
import sys
from html.parser import HTMLParser

VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}

# The class of a link in a module's item table, and the kind the listing calls it.
ITEM_KINDS = {
    "mod": "mod",
    "struct": "struct",
    "enum": "enum",
    "union": "union",
    "trait": "trait",
    "traitalias": "trait-alias",
    "fn": "fn",
    "type": "type",
    "constant": "const",
    "static": "static",
    "macro": "macro",
    "attr": "attr-macro",
    "derive": "derive-macro",
    "primitive": "primitive",
    "keyword": "keyword",
    "foreigntype": "foreign-type",
}

# Sections of a page whose contents are not this item's own API.
SKIPPED_SECTIONS = {"synthetic-implementations", "blanket-implementations", "aliased-type"}
TRAIT_IMPL_SECTIONS = {"trait-implementations", "foreign-impls", "implementors"}
TRAIT_MEMBER_SECTIONS = {
    "required-methods": "required-method",
    "provided-methods": "provided-method",
    "required-associated-types": "required-type",
    "provided-associated-types": "provided-type",
    "required-associated-consts": "required-const",
    "provided-associated-consts": "provided-const",
}
INHERENT_MEMBER_KINDS = {
    "method": "method",
    "associatedconstant": "assoc-const",
    "associatedtype": "assoc-type",
}
MEMBER_ID = re.compile(r"(method|tymethod|associatedtype|associatedconstant)\.([^.]+?)(?:-\d+)?")

# Marks what rustdoc renders as a comment (`/* private fields */`, `// some variants omitted`).
COMMENT_START, COMMENT_END = "\x01", "\x02"


class Node:
    __slots__ = ("tag", "attrs", "children")

    def __init__(self, tag, attrs):
        self.tag = tag
        self.attrs = attrs
        self.children = []

    def get(self, name):
        return self.attrs.get(name) or ""

    @property
    def classes(self):
        return self.get("class").split()


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: (v or "") for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(path):
    builder = TreeBuilder()
    with open(path, encoding="utf-8") as f:
        builder.feed(f.read())
    builder.close()
    return builder.root


def walk(node):
    """Pre-order over element nodes, never entering doc comments."""
    yield node
    for child in node.children:
        if isinstance(child, Node):
            if child.tag == "div" and "docblock" in child.classes:
                continue
            yield from walk(child)


def find(node, pred):
    for n in walk(node):
        if pred(n):
            return n
    return None


def raw_text(node):
    out = []

    def visit(n):
        if isinstance(n, str):
            out.append(n)
            return
        cls = n.classes
        if n.tag == "summary" and "hideme" in cls:  # "Show 13 variants"
            return
        if n.tag == "a" and "src" in cls or n.tag == "span" and "rightside" in cls:
            return
        if n.tag == "br":
            out.append("\n")
        if n.tag == "div" and "where" in cls:
            out.append("\n")
        if n.tag == "span" and "comment" in cls:
            out.append(COMMENT_START)
        for c in n.children:
            visit(c)
        if n.tag == "span" and "comment" in cls:
            out.append(COMMENT_END)
        if n.tag == "div" and "code-attribute" in cls:
            out.append("\n")

    visit(node)
    return "".join(out)


def normalise(text):
    text = text.replace("\xa0", " ")
    # rustdoc puts one argument a line when a signature is long: `f(\n    a: A,\n) -> R`.
    text = re.sub(r"([(\[])\s*\n\s*", r"\1", text)
    text = re.sub(r",\s*\n\s*([)\]])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def plain(text):
    return text.replace(COMMENT_START, "").replace(COMMENT_END, "")


def code_text(node):
    return plain(normalise(raw_text(node)))


def first_code(node):
    """The `<code>` of a field's heading, without the `§` anchor before it."""
    return find(node, lambda n: n.tag == "code") or node


def summarise_body(decl):
    """`pub struct S { pub a: u32, /* private fields */ }` -> `pub struct S { ..., /* private
    fields */ }`: each field, variant and trait item has a line of its own."""
    depth, i = 0, 0
    while i < len(decl):
        c = decl[i]
        if c == COMMENT_START:
            i = decl.find(COMMENT_END, i)
            if i < 0:
                return plain(decl)
        elif c in "([<":
            depth += 1
        elif c in ")]" or c == ">" and decl[i - 1 : i] != "-":
            depth -= 1
        elif c == "{" and depth == 0:
            break
        i += 1
    else:
        return plain(decl)  # a unit or tuple struct: no body
    if not decl.endswith("}"):
        return plain(decl)
    head, body = decl[:i].rstrip(), decl[i + 1 : -1]
    comments = re.findall(COMMENT_START + "(.*?)" + COMMENT_END, body)
    rest = re.sub(COMMENT_START + ".*?" + COMMENT_END, "", body).strip()
    parts = (["..."] if rest else []) + [c.strip() for c in comments]
    return head + (" { " + ", ".join(parts) + " }" if parts else " {}")


def trivial_impl(header, name):
    """Whether an inherent impl header says no more than the type does: `impl Foo` or
    `impl<T, 'a> Foo<T, 'a>`, not `impl<T: Clone> Foo<T>` nor `impl Foo<u8>`."""
    m = re.fullmatch(r"impl(?:<(.*?)>)? (\S+?)(?:<(.*)>)?", header)
    return bool(m) and m.group(2) == name and m.group(1) == m.group(3)


class Lister:
    def __init__(self, doc_dir, crate):
        self.crate = crate
        self.root = os.path.join(doc_dir, crate)
        self.lines = set()
        self.type_impls = set()  # impl headers seen on the implementing types' pages
        self.trait_impls = []  # (trait path, impl header, impl line) from trait pages
        self.seen_modules = set()

    def emit(self, path, kind, sig):
        entry = [path, kind, sig]
        self.lines.add(tuple(entry))
        return entry

    def run(self):
        index = os.path.join(self.root, "index.html")
        if not os.path.isfile(index):
            sys.exit(f"public-api: no rustdoc output at {index}: run cargo doc --no-deps first")
        self.module(index, self.crate, top=True)
        for path, header, sig in self.trait_impls:
            if header not in self.type_impls:
                self.lines.add((path, "impl", sig))
        return sorted(f"{p}  {k}  {s}" for p, k, s in self.lines)

    def module(self, file, path, top=False):
        real = os.path.realpath(file)
        if real in self.seen_modules:
            return
        self.seen_modules.add(real)
        main = find(parse(file), lambda n: n.get("id") == "main-content")
        if main is None:
            sys.exit(f"public-api: {file} is not a rustdoc module page")
        if not top:
            entry = self.emit(path, "mod", "pub mod " + path.rsplit("::", 1)[-1])
            if find(main, lambda n: n.tag == "div" and {"stab", "deprecated"} <= set(n.classes)):
                self.lines.discard(tuple(entry))
                self.emit(path, "mod", "#[deprecated] " + entry[2])
        here = os.path.dirname(file)
        for table in walk(main):
            if table.tag != "dl" or "item-table" not in table.classes:
                continue
            for dt in table.children:
                if not isinstance(dt, Node) or dt.tag != "dt":
                    continue
                if "reexports" in table.classes:
                    self.reexport(dt, path)
                    continue
                link = next(
                    (a for a in walk(dt) if a.tag == "a" and a.get("href") and a.classes), None
                )
                if link is None:
                    continue
                self.item(link, path, here)

    def reexport(self, dt, path):
        sig = code_text(dt)
        m = re.fullmatch(r"(?:pub(?:\([^)]*\))? )?(?:use|extern crate) (.*?);?", sig)
        target = m.group(1) if m else sig
        if " as " in target:
            name = target.rsplit(" as ", 1)[1]
        else:
            name = target.rsplit("::", 1)[-1]
        self.emit(f"{path}::{name.strip()}", "reexport", sig)

    def item(self, link, path, here):
        href = link.get("href").split("#", 1)[0]
        css = link.classes[0]
        kind = ITEM_KINDS.get(css, css)
        file = os.path.normpath(os.path.join(here, href))
        if css == "mod":
            name = os.path.basename(os.path.dirname(file))
        else:
            name = re.sub(r"^[a-z]+\.(.*)\.html$", r"\1", os.path.basename(file))
        full = f"{path}::{name}"
        if not os.path.isfile(file):
            self.emit(full, kind, "(no page at " + href + ")")
        elif css == "mod":
            self.module(file, full)
        else:
            self.page(file, full, kind)

    def page(self, file, path, kind):
        main = find(parse(file), lambda n: n.get("id") == "main-content")
        decl = find(main, lambda n: n.tag == "pre" and "item-decl" in n.classes)
        if decl is None:
            sig = ""
        elif kind in ("struct", "enum", "union", "trait"):
            sig = summarise_body(normalise(raw_text(decl)))
        else:
            sig = code_text(decl)
        last = self.emit(path, kind, sig)
        name = path.rsplit("::", 1)[-1]
        section = None
        impl = None  # [header, associated items, line path] of the impl being read
        impls = []

        for n in walk(main):
            cls = n.classes
            nid = n.get("id")
            if n.tag == "h2" and "section-header" in cls:
                section, impl, last = nid, None, None
                continue
            if section in SKIPPED_SECTIONS or (section or "").startswith("deref-methods-"):
                continue
            if n.tag == "div" and "stab" in cls and "deprecated" in cls:
                if last is not None:
                    self.lines.discard(tuple(last))
                    last[2] = "#[deprecated] " + last[2]
                    self.lines.add(tuple(last))
                    last = None
                continue
            if n.tag == "section" and "impl" in cls and nid.startswith("impl-"):
                header = code_text(find(n, lambda h: "code-header" in h.classes))
                last = None
                if section == "implementations":
                    impl = [header, None]
                elif section in TRAIT_IMPL_SECTIONS:
                    impl = [header, []]
                    impls.append(impl)
                continue
            m = MEMBER_ID.fullmatch(nid) if n.tag == "section" else None
            if m:
                sig = code_text(find(n, lambda h: "code-header" in h.classes))
                prefix, member = m.groups()
                last = None
                if section == "implementations" and impl is not None:
                    if not trivial_impl(impl[0], name):
                        sig += f"  [{impl[0]}]"
                    last = self.emit(f"{path}::{member}", INHERENT_MEMBER_KINDS[prefix], sig)
                elif section in TRAIT_IMPL_SECTIONS and impl is not None:
                    if prefix in ("associatedtype", "associatedconstant"):
                        impl[1].append(sig)
                elif section in TRAIT_MEMBER_SECTIONS:
                    last = self.emit(f"{path}::{member}", TRAIT_MEMBER_SECTIONS[section], sig)
                continue
            if kind not in ("struct", "enum", "union"):
                pass  # a type alias's page shows the fields and variants of the aliased type
            elif section == "fields" and n.tag == "span" and nid.startswith("structfield."):
                field = nid[len("structfield.") :]
                last = self.emit(f"{path}::{field}", "field", code_text(first_code(n)))
            elif section == "variants" and n.tag == "section" and nid.startswith("variant."):
                header = find(n, lambda h: "code-header" in h.classes)
                last = self.emit(f"{path}::{nid[len('variant.') :]}", "variant", code_text(header))
            elif section == "variants" and n.tag == "span" and ".field." in nid:
                variant, field = nid[len("variant.") :].split(".field.", 1)
                sig = code_text(first_code(n))
                last = self.emit(f"{path}::{variant}::{field}", "variant-field", sig)
            if section == "dyn-compatibility" and "dyn-compatibility-info" in cls:
                first = find(n, lambda p: p.tag == "p")
                self.emit(path, "dyn-compat", code_text(first or n))

        for header, items in impls:
            sig = header + (" { " + " ".join(i + ";" for i in items) + " }" if items else "")
            if kind == "trait":
                self.trait_impls.append((path, header, sig))
            else:
                self.type_impls.add(header)
                self.emit(path, "impl", sig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crates", nargs="+", metavar="CRATE")
    parser.add_argument("--doc-dir", default="target/doc", help="rustdoc's output (target/doc)")
    parser.add_argument("--out-dir", help="write <package>.txt here instead of to stdout")
    args = parser.parse_args()
    for crate in args.crates:
        lines = Lister(args.doc_dir, crate.replace("-", "_")).run()
        text = "".join(line + "\n" for line in lines)
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            target = os.path.join(args.out_dir, crate.replace("_", "-") + ".txt")
            with open(target, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        else:
            sys.stdout.buffer.write(text.encode("utf-8"))


if __name__ == "__main__":
    main()
