// A small Markdown renderer that builds DOM nodes: text is only ever set as textContent,
// never parsed as HTML, so nothing a model writes can become markup or script.
// Blocks: fenced code, headings, lists, quotes, paragraphs. Inline: `code`, **strong**,
// *em*, [text](http(s) link), and citations [n] which link to the sources panel.

const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_|\[([^\]]+)\]\(([^)\s]+)\)|\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;

function el(tag, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  return node;
}

function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// Inline spans into `parent`; `cite(n)` makes the node for citation n (or null: plain text).
export function inline(parent, text, cite) {
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > at) parent.append(text.slice(at, m.index));
    at = m.index + m[0].length;
    if (m[2] !== undefined) {
      const code = el("code");
      code.textContent = m[2];
      parent.append(code);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const strong = el("strong");
      inline(strong, m[3] ?? m[4], cite);
      parent.append(strong);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      const em = el("em");
      inline(em, m[5] ?? m[6], cite);
      parent.append(em);
    } else if (m[7] !== undefined) {
      const href = safeHref(m[8]);
      if (href) {
        const a = el("a");
        a.href = href;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        inline(a, m[7], cite);
        parent.append(a);
      } else {
        parent.append(m[0]);
      }
    } else {
      const numbers = m[9].split(",").map((n) => Number(n.trim()));
      const nodes = numbers.map((n) => (cite ? cite(n) : null));
      if (nodes.every((n) => n)) {
        nodes.forEach((n) => parent.append(n));
      } else {
        parent.append(m[0]);
      }
    }
  }
  if (at < text.length) parent.append(text.slice(at));
}

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s{0,3}([-*+])\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

// The whole text as a DocumentFragment. Partial text (a stream) renders too: an open fence
// is code up to the end.
export function render(text, cite) {
  const out = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) {
      const p = el("p");
      inline(p, para.join("\n"), cite);
      out.append(p);
      para = [];
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      flush();
      list = null;
      const body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) body.push(lines[i]);
      const pre = el("pre");
      const code = el("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      out.append(pre);
      continue;
    }
    if (!line.trim()) {
      flush();
      list = null;
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      flush();
      list = null;
      const h = el(`h${Math.min(heading[1].length + 2, 6)}`);
      inline(h, heading[2], cite);
      out.append(h);
      continue;
    }
    const bullet = line.match(BULLET);
    const numbered = bullet ? null : line.match(NUMBERED);
    if (bullet || numbered) {
      flush();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        if (numbered && numbered[1] !== "1") list.start = Number(numbered[1]);
        out.append(list);
      }
      const li = el("li");
      inline(li, (bullet || numbered)[2], cite);
      list.append(li);
      continue;
    }
    const quote = line.match(QUOTE);
    if (quote) {
      flush();
      list = null;
      const q = el("blockquote");
      inline(q, quote[1], cite);
      out.append(q);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {  // a list item's continuation line
      list.lastElementChild.append(" ");
      inline(list.lastElementChild, line.trim(), cite);
      continue;
    }
    list = null;
    para.push(line);
  }
  flush();
  return out;
}
