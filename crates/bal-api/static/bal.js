// The dashboard's only script: keeps a live chart current. The server draws the chart (SVG);
// this listens to the reading stream and fetches the redrawn chart, at most once a second,
// and says so when the stream ends (access withdrawn or session over).
"use strict";
document.querySelectorAll("figure[data-live]").forEach((fig) => {
  const chart = fig.querySelector(".chart");
  const status = fig.querySelector(".status");
  let queued = false;
  const redraw = () => {
    if (queued) return;
    queued = true;
    setTimeout(async () => {
      queued = false;
      try {
        const r = await fetch(fig.dataset.chart, { credentials: "same-origin" });
        if (r.ok) chart.innerHTML = await r.text();
      } catch (_) { /* the next reading retries */ }
    }, 1000);
  };
  const stream = new EventSource(fig.dataset.live);
  stream.addEventListener("measurement", redraw);
  const ended = (why) => {
    stream.close();
    fig.dataset.state = "ended";
    status.textContent = why;
  };
  stream.addEventListener("end", () => ended("Live stream ended: access was withdrawn."));
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) ended("Live stream ended.");
  };
  fig.dataset.state = "live";
  status.textContent = "Live: the chart updates as readings arrive.";
});
