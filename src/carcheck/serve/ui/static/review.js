// carcheck review page: keyboard shortcuts, overlay toggles, the selected finding's boxes and damage instances
// highlighted, drawing a box / polygon for "add damage".
// Plain JavaScript, no library, served from the package (the pages' CSP allows no other script).
(function () {
  "use strict";
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  document.addEventListener("DOMContentLoaded", function () {
    var body = document.body;
    // ---- overlay toggles
    [["t-parts", "show-parts"], ["t-damage", "show-damage"], ["t-boxes", "show-boxes"]].forEach(function (t) {
      var box = document.getElementById(t[0]);
      if (!box) { return; }
      var apply = function () { body.classList.toggle(t[1], box.checked); };
      box.addEventListener("change", apply);
      apply();
    });
    function toggle(id) { var b = document.getElementById(id); if (b) { b.checked = !b.checked; b.dispatchEvent(new Event("change")); } }

    // ---- finding selection
    var items = $all("li.finding");
    function current() { return $("li.finding.selected"); }
    function select(li) {
      if (!li) { return; }
      items.forEach(function (x) { x.classList.remove("selected"); });
      li.classList.add("selected");
      // the selected finding's detection boxes, and its damage instances (outline, box, number)
      $all("svg.boxes [data-finding]").forEach(function (r) {
        var mine = r.getAttribute("data-finding") === li.getAttribute("data-id");
        r.classList.toggle("hl", mine);
        // an instance on two parts is drawn for both findings: the selected finding's goes on top
        if (mine && r.tagName.toLowerCase() === "g") { r.parentNode.insertBefore(r, $("rect.draft", r.parentNode)); }
      });
      li.scrollIntoView({ block: "nearest" });
    }
    items.forEach(function (li) { li.addEventListener("click", function () { select(li); }); });
    select(current() || items[0]);
    function move(step) {
      var li = current(), i = items.indexOf(li);
      select(items[Math.min(items.length - 1, Math.max(0, i + step))]);
    }
    function submit(form) { if (form) { if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); } } }

    // ---- drawing
    var drawing = false, poly = [], active = null, start = null;
    var drawBtn = document.getElementById("draw"), polyMode = document.getElementById("poly-mode");
    function setDraw(on) {
      drawing = on;
      body.classList.toggle("drawing", on);
      if (drawBtn) { drawBtn.textContent = on ? "Drawing: drag on a photo (a to stop)" : "Draw a box (a)"; }
    }
    if (drawBtn) { drawBtn.addEventListener("click", function () { setDraw(!drawing); }); }
    function pt(svg, ev) {
      var r = svg.getBoundingClientRect(), fig = svg.closest("figure.photo");
      var W = +fig.getAttribute("data-w"), H = +fig.getAttribute("data-h");
      return [Math.max(0, Math.min(W, (ev.clientX - r.left) * W / r.width)),
              Math.max(0, Math.min(H, (ev.clientY - r.top) * H / r.height))];
    }
    function setBox(svg, x0, y0, x1, y1, points) {
      var fig = svg.closest("figure.photo");
      var x = Math.min(x0, x1), y = Math.min(y0, y1), w = Math.abs(x1 - x0), h = Math.abs(y1 - y0);
      var d = $("rect.draft", svg);
      d.setAttribute("x", x); d.setAttribute("y", y); d.setAttribute("width", w); d.setAttribute("height", h);
      if (w < 2 || h < 2) { return; }
      document.getElementById("add-photo").value = fig.getAttribute("data-photo");
      document.getElementById("add-x").value = x.toFixed(1);
      document.getElementById("add-y").value = y.toFixed(1);
      document.getElementById("add-w").value = w.toFixed(1);
      document.getElementById("add-h").value = h.toFixed(1);
      document.getElementById("add-polygon").value = points ? points.map(function (v) { return v.toFixed(1); }).join(",") : "";
      var name = $(".fname", fig);
      document.getElementById("add-where").textContent = (points ? "polygon" : "box") + " on " + (name ? name.textContent : "photo") +
        ": " + [x, y, w, h].map(function (v) { return Math.round(v); }).join(", ");
      document.getElementById("add-submit").disabled = false;
    }
    $all("svg.boxes").forEach(function (svg) {
      svg.addEventListener("mousedown", function (ev) {
        if (!drawing || (polyMode && polyMode.checked)) { return; }
        ev.preventDefault(); active = svg; start = pt(svg, ev);
      });
      svg.addEventListener("mousemove", function (ev) {
        if (active !== svg || !start) { return; }
        var p = pt(svg, ev); setBox(svg, start[0], start[1], p[0], p[1], null);
      });
      svg.addEventListener("mouseup", function (ev) {
        if (active !== svg || !start) { return; }
        var p = pt(svg, ev); setBox(svg, start[0], start[1], p[0], p[1], null);
        active = null; start = null; setDraw(false); var sel = document.getElementById("add-damage"); if (sel) { sel.focus(); }
      });
      svg.addEventListener("click", function (ev) {
        if (!drawing || !polyMode || !polyMode.checked) { return; }
        if (active && active !== svg) { poly = []; }
        active = svg; var p = pt(svg, ev); poly.push(p[0], p[1]);
        $("polyline.draft-poly", svg).setAttribute("points", poly.join(" "));
      });
      svg.addEventListener("dblclick", function () {
        if (!drawing || !polyMode || !polyMode.checked || poly.length < 6) { return; }
        var xs = poly.filter(function (_, i) { return i % 2 === 0; }), ys = poly.filter(function (_, i) { return i % 2 === 1; });
        setBox(svg, Math.min.apply(null, xs), Math.min.apply(null, ys), Math.max.apply(null, xs), Math.max.apply(null, ys), poly.slice());
        poly = []; active = null; setDraw(false);
      });
    });

    // ---- keys
    document.addEventListener("keydown", function (ev) {
      var t = ev.target, tag = t && t.tagName;
      // a ticked checkbox (an instance kept or not, an overlay toggle) leaves the keys working
      var typing = (tag === "INPUT" && t.type !== "checkbox") || tag === "SELECT" || tag === "TEXTAREA";
      if (ev.key === "Enter" && typing && tag !== "TEXTAREA" && t.form && t.type !== "submit") {
        ev.preventDefault(); submit(t.form); return;       // Enter submits the form being edited
      }
      if (ev.key === "Escape" && typing) { t.blur(); return; }
      if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      var li = current();
      switch (ev.key) {
        case "j": move(1); break;
        case "k": move(-1); break;
        case "c": if (li) { submit($("form.f-confirm", li)); } break;
        case "r": if (li) { submit($("form.f-reject", li)); } break;
        case "e": if (li) { var s = $(".e-damage", li); if (s) { s.focus(); } } break;
        case "n": if (li) { var n = $(".e-note", li); if (n) { n.focus(); } } break;
        case "p": toggle("t-parts"); break;
        case "d": toggle("t-damage"); break;
        case "b": toggle("t-boxes"); break;
        case "a": setDraw(!drawing); break;
        default: return;
      }
      ev.preventDefault();
    });
  });
})();
