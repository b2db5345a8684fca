// The site page's list of twins, virtualised: a grid of fixed-size cards of which only the rows in view (and
// a row or two around them) exist in the document. Thousands of twins cost a few dozen elements, so the page
// lays out and styles what a person sees, not the whole site. The list keeps its full height (the scroll bar
// and the page below stay where they would be), each card says its place (aria-posinset / aria-setsize), and
// a card that gets the focus is scrolled into view by the browser, which moves the window on: Tab walks the
// whole list.
const MIN_CARD = 176; // px: the cards' minimum width (11rem)
const GAP = 8; // px: the grid's gap (.5rem)
const CARD = 64; // px: a card's fixed height (4rem)
const PITCH = CARD + GAP;
const OVERSCAN = 2; // rows drawn beyond each edge of the window

export class TwinList {
  // list: the <ul>; href(id): a twin's link; label(id): its health line.
  constructor(list, href, label) {
    this.list = list;
    this.href = href;
    this.label = label;
    this.ids = []; // the twins shown (filtered), sorted
    this.items = new Map(); // id -> {li, link, health}: the cards in the document
    this.width = 0;
    this.frame = 0;
    this.dirty = new Set(); // ids whose card text may have changed
    new ResizeObserver(([entry]) => {
      const width = Math.round(entry.contentRect.width);
      if (width !== this.width) { this.width = width; this.schedule(); }
    }).observe(list);
    this.onScroll = () => this.schedule();
    window.addEventListener("scroll", this.onScroll, { passive: true });
    window.addEventListener("resize", this.onScroll, { passive: true });
  }

  stop() {
    window.removeEventListener("scroll", this.onScroll);
    window.removeEventListener("resize", this.onScroll);
    cancelAnimationFrame(this.frame);
  }

  columns() { return Math.max(1, Math.floor((this.width + GAP) / (MIN_CARD + GAP))); }

  // The twins to list (already filtered and sorted).
  show(ids) { this.ids = ids; this.schedule(); }

  // Twins whose health changed: their cards (if in the document) are written at the next frame.
  touch(ids) { for (const id of ids) if (this.items.has(id)) this.dirty.add(id); this.schedule(); }

  schedule() { if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); }); }

  render() {
    cancelAnimationFrame(this.frame); this.frame = 0;
    // Reads first (one layout, of what changed since the last frame), then only writes.
    const top = this.list.getBoundingClientRect().top;
    const view = window.innerHeight;
    const columns = this.columns();
    const rows = Math.ceil(this.ids.length / columns);
    // Never an empty window, so Tab always finds a card to go on from: the first rows while the list is
    // below the fold, the last ones once it is scrolled past.
    const first = Math.min(Math.max(0, Math.floor(-top / PITCH) - OVERSCAN), Math.max(0, rows - OVERSCAN));
    const last = Math.min(rows, Math.max(Math.ceil((view - top) / PITCH) + OVERSCAN, first + OVERSCAN));
    const from = first * columns, to = Math.min(this.ids.length, last * columns);

    const height = `${Math.max(0, rows * PITCH - GAP)}px`;
    if (this.list.style.height !== height) this.list.style.height = height;
    const pad = `${first * PITCH}px`;
    if (this.list.style.paddingTop !== pad) this.list.style.paddingTop = pad;
    const template = `repeat(${columns}, minmax(0, 1fr))`;
    if (this.list.style.gridTemplateColumns !== template) this.list.style.gridTemplateColumns = template;

    const wanted = new Set(this.ids.slice(from, to));
    for (const [id, item] of this.items) {
      if (!wanted.has(id)) { item.li.remove(); this.items.delete(id); }
    }
    let before = null; // insert in order: walk the window backwards
    for (let i = to - 1; i >= from; i -= 1) {
      const id = this.ids[i];
      let item = this.items.get(id);
      if (!item) {
        item = this.card(id);
        this.items.set(id, item);
        this.list.insertBefore(item.li, before);
        this.write(id, item);
      } else if (item.li.nextSibling !== before) {
        this.list.insertBefore(item.li, before);
      }
      const place = String(i + 1);
      if (item.li.getAttribute("aria-posinset") !== place) item.li.setAttribute("aria-posinset", place);
      before = item.li;
    }
    const size = String(this.ids.length);
    for (const item of this.items.values()) {
      if (item.li.getAttribute("aria-setsize") !== size) item.li.setAttribute("aria-setsize", size);
    }
    for (const id of this.dirty) { const item = this.items.get(id); if (item) this.write(id, item); }
    this.dirty.clear();
  }

  card(id) {
    const li = document.createElement("li");
    li.dataset.twin = id;
    const link = document.createElement("a");
    link.href = this.href(id);
    const name = document.createElement("span");
    name.className = "id";
    name.textContent = id;
    const health = document.createElement("span");
    health.className = "health";
    link.append(name, health);
    li.append(link);
    return { li, link, health };
  }

  write(id, item) {
    const [status, text] = this.label(id);
    if (item.link.dataset.status !== status) item.link.dataset.status = status;
    if (item.health.textContent !== text) item.health.textContent = text;
  }
}
