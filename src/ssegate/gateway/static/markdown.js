// A tiny, safe markdown renderer for model output.
//
// It builds DOM nodes (text nodes and a fixed set of elements); nothing it is
// given is ever parsed as HTML, so `<script>` or `<img onerror>` in an answer is
// shown as the text it is. Supported: paragraphs (a single newline is a line
// break), fenced code blocks (``` or ~~~, an unclosed one runs to the end, as
// while it streams), headings, bullet and numbered lists (nested by indent),
// inline code, **bold**, *italic*, [links](https://...) and bare URLs: links
// only to http(s), opening elsewhere with no referrer. Anything else is text.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const LINK = /^\[([^\]\n]+)\]\(\s*([^()\s]+)\s*\)/;
const BARE_URL = /^https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/i;
const PUNCTUATION = /^[!-/:-@[-`{-~]$/;

/** The markdown `source` as a DocumentFragment of safe nodes. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !closesFence(lines[i], fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or past the end)
      fragment.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1].length + 2); // h3..h6: inside a message
      fragment.append(element(`h${level}`, inline(heading[2])));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      fragment.append(document.createElement("hr"));
      i += 1;
      continue;
    }
    if (ITEM.test(line)) {
      i = list(lines, i, fragment);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
      paragraph.push(lines[i++].trim());
    }
    fragment.append(element("p", lines_(paragraph)));
  }
  return fragment;
}

function closesFence(line, opening) {
  const trimmed = line.trim();
  return trimmed.length >= opening.length && trimmed === opening[0].repeat(trimmed.length);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || ITEM.test(line) || RULE.test(line);
}

function codeBlock(text, language) {
  const pre = document.createElement("pre");
  const code = document.createElement("code");
  if (language) {
    pre.dataset.lang = language.slice(0, 32);
  }
  code.textContent = text;
  pre.append(code);
  return pre;
}

function element(tag, children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

// Lines of one paragraph: inline markup per line, <br> between them.
function lines_(lines) {
  const nodes = [];
  lines.forEach((line, index) => {
    if (index) nodes.push(document.createElement("br"));
    nodes.push(...inline(line));
  });
  return nodes;
}

// A list from lines[start]; nested lists by indentation. Returns the next line.
function list(lines, start, parent) {
  const stack = []; // {indent, node, item}
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const match = ITEM.exec(line);
    if (!match) {
      if (!line.trim()) {
        // a blank line ends the list unless an item follows
        if (i + 1 < lines.length && ITEM.test(lines[i + 1])) {
          i += 1;
          continue;
        }
        break;
      }
      if (/^\s{2,}/.test(line) && stack.length && !FENCE.test(line)) {
        const { item } = stack[stack.length - 1];
        item.append(document.createElement("br"), ...inline(line.trim()));
        i += 1;
        continue;
      }
      break;
    }
    const indent = match[1].replace(/\t/g, "    ").length;
    const ordered = /\d/.test(match[2]);
    while (stack.length && indent < stack[stack.length - 1].indent) stack.pop();
    const same = stack[stack.length - 1];
    if (same && indent === same.indent && same.ordered !== ordered) stack.pop(); // - then 1.
    let top = stack[stack.length - 1];
    if (!top || indent > top.indent) {
      const node = document.createElement(ordered ? "ol" : "ul");
      if (ordered) {
        const first = parseInt(match[2], 10);
        if (first !== 1) node.start = first;
      }
      (top ? top.item : parent).append(node);
      top = { indent, ordered, node, item: null };
      stack.push(top);
    }
    const item = element("li", inline(match[3]));
    top.node.append(item);
    top.item = item;
    i += 1;
  }
  return i;
}

/** Inline markup of one line: an array of nodes. */
export function inline(text, linking = true) {
  const nodes = [];
  let plain = "";
  const flush = () => {
    if (plain) nodes.push(document.createTextNode(plain));
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    const rest = text.slice(i);
    if (char === "\\" && i + 1 < text.length && PUNCTUATION.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (char === "`") {
      const run = /^`+/.exec(rest)[0];
      const end = findRun(text, run, i + run.length);
      if (end > 0) {
        flush();
        const code = document.createElement("code");
        code.textContent = text.slice(i + run.length, end).replace(/^ (.+) $/, "$1");
        nodes.push(code);
        i = end + run.length;
      } else {
        plain += run;
        i += run.length;
      }
      continue;
    }
    if (linking && char === "[") {
      const link = LINK.exec(rest);
      if (link && safeUrl(link[2])) {
        flush();
        nodes.push(anchor(link[2], inline(link[1], false)));
        i += link[0].length;
        continue;
      }
    }
    if (linking && (char === "h" || char === "H") && !/\w/.test(text[i - 1] || "")) {
      const url = BARE_URL.exec(rest);
      if (url && safeUrl(url[0])) {
        flush();
        nodes.push(anchor(url[0], [document.createTextNode(url[0])]));
        i += url[0].length;
        continue;
      }
    }
    if (char === "*" || char === "_") {
      const emphasis = emphasize(text, i, linking);
      if (emphasis) {
        flush();
        nodes.push(emphasis.node);
        i = emphasis.end;
        continue;
      }
    }
    plain += char;
    i += 1;
  }
  flush();
  return nodes;
}

function findRun(text, run, from) {
  let at = text.indexOf(run, from);
  while (at >= 0) {
    const before = text[at - 1] !== "`";
    const after = text[at + run.length] !== "`";
    if (before && after && at > from) return at;
    at = text.indexOf(run, at + 1);
  }
  return -1;
}

// **strong** / __strong__ / *em* / _em_ opening at i: {node, end} or null.
function emphasize(text, i, linking) {
  const char = text[i];
  const double = text[i + 1] === char;
  const delimiter = double ? char + char : char;
  const start = i + delimiter.length;
  if (start >= text.length || /\s/.test(text[start])) return null;
  // Not inside a word: snake_case_names, 2*3*4 stay as they are.
  if (!double && /[\p{L}\p{N}]/u.test(text[i - 1] || "")) return null;
  if (char === "_" && /[\p{L}\p{N}]/u.test(text[i - 1] || "")) return null;
  let at = text.indexOf(delimiter, start + 1);
  while (at > 0) {
    const closes =
      !/\s/.test(text[at - 1]) &&
      (double || (text[at + 1] !== char && text[at - 1] !== char)) &&
      (char !== "_" || !/[\p{L}\p{N}]/u.test(text[at + delimiter.length] || ""));
    if (closes) {
      const node = document.createElement(double ? "strong" : "em");
      node.append(...inline(text.slice(start, at), linking));
      return { node, end: at + delimiter.length };
    }
    at = text.indexOf(delimiter, at + 1);
  }
  return null;
}

function safeUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:";
  } catch {
    return false;
  }
}

function anchor(url, children) {
  const a = document.createElement("a");
  a.href = new URL(url).href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.append(...children);
  return a;
}
