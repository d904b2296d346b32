// The buyers' page (docs/web.md): sign in with an API key, draw or upload an area, quote,
// order, follow the report's progress, see its chart and table, download it, list past reports.
// Everything goes through the REST API under /api/v1/ with `Authorization: Api-Key <key>`.
// Text from the API is only ever set as textContent, never parsed as HTML.
(function () {
  "use strict";

  const API = "/api/v1/";
  const KEY_STORAGE = "footfall.apiKey";
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const TABLE_ROWS = 500;
  const $ = (id) => document.getElementById(id);

  let apiKey = sessionStorage.getItem(KEY_STORAGE);
  let products = [];
  let map = null;
  let drawnLayer = null;
  let resultLayer = null;
  let drawHandlers = {};
  let area = null; // {geometry, km2}
  let quote = null; // {id, body, idempotencyKey}
  let watching = 0; // the report the page follows; a newer watch stops an older one
  let currentReport = null;
  let chart = null;

  // --- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super(errorMessage(status, body));
      this.status = status;
      this.code = body && body.code;
      this.retryAfter = retryAfter;
    }
  }

  function errorMessage(status, body) {
    if (body && Array.isArray(body.errors) && body.errors.length > 1) {
      return body.errors.map((e) => (e.attr ? `${e.attr}: ${e.detail}` : e.detail)).join("; ");
    }
    if (body && body.message) return body.message;
    return `the server answered ${status}`;
  }

  async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
    const url = path.startsWith("/") ? path : API + path;
    const init = {
      method,
      headers: { Authorization: `Api-Key ${apiKey}`, ...headers },
      credentials: "omit", // the key is the only credential: no cookie goes with it
      cache: "no-store",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch (ignored) {
        data = null;
      }
      const error = new ApiError(response.status, data, Number(response.headers.get("Retry-After")) || 0);
      if (response.status === 401 && path !== "organisation/") signOut("Your key stopped working: " + error.message);
      throw error;
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // --- signing in -------------------------------------------------------------------------

  async function signIn(key) {
    apiKey = key;
    const organisation = await api("organisation/");
    sessionStorage.setItem(KEY_STORAGE, key);
    $("org-name").textContent = organisation.name;
    $("org-details").textContent = `· ${organisation.time_zone}`;
    $("who").hidden = false;
    $("signin-section").hidden = true;
    $("app").hidden = false;
    startApp();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    apiKey = null;
    watching += 1;
    $("app").hidden = true;
    $("who").hidden = true;
    $("signin-section").hidden = false;
    $("api-key").value = "";
    $("signin-error").textContent = message || "";
    resetOrder();
    $("report-section").hidden = true;
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("signin-error").textContent = "";
    if (!key) return;
    try {
      await signIn(key);
    } catch (error) {
      apiKey = null;
      $("signin-error").textContent =
        error.status === 401 ? "This key is unknown, expired or revoked." : `Could not sign in: ${error.message}`;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("sign-in").disabled = false; // the form is handled here from now on

  // --- the map ----------------------------------------------------------------------------

  function initMap() {
    if (map) return;
    const element = $("map");
    const tileUrl = element.dataset.tileUrl;
    map = L.map(element, { zoomSnap: 0.25, attributionControl: Boolean(tileUrl) });
    if (tileUrl) {
      L.tileLayer(tileUrl, { attribution: element.dataset.tileAttribution || "", maxZoom: 19 }).addTo(map);
    } else {
      element.classList.add("no-tiles");
    }
    map.setView([51.0, 10.0], 5);
    L.control.scale({ imperial: false }).addTo(map);
    new ResizeObserver(() => map.invalidateSize()).observe(element); // the card grows with the quote
    drawnLayer = new L.FeatureGroup().addTo(map);
    const shape = { color: "#c2410c", weight: 3, fillOpacity: 0.15 };
    drawHandlers = {
      polygon: new L.Draw.Polygon(map, { allowIntersection: false, showArea: false, shapeOptions: shape }),
      rectangle: new L.Draw.Rectangle(map, { showArea: false, shapeOptions: shape }),
    };
    map.on(L.Draw.Event.CREATED, (event) => {
      setArea(event.layer);
    });
    loadLicensedRegions(); // first, so the districts' outlines are drawn over it
    loadRegions();
  }

  // Where the organisation may order: an order's area must lie inside one of these.
  async function loadLicensedRegions() {
    const layer = L.geoJSON(null, {
      interactive: false,
      style: { color: "#15803d", weight: 2, fillColor: "#22c55e", fillOpacity: 0.06 },
    }).addTo(map);
    try {
      for (const region of await api("licensed-regions/")) {
        layer.addData({ type: "Feature", properties: region, geometry: region.geometry });
      }
    } catch (error) {
      $("area-error").textContent = `Your licensed regions could not be loaded: ${error.message}`;
      return;
    }
    layer.eachLayer((region) => region.getElement().setAttribute("data-licensed-region", region.feature.properties.name));
    const names = layer.getLayers().map((region) => region.feature.properties.name);
    $("licence-info").textContent = names.length
      ? `Green outline: where your organisation may order (${names.join(", ")}).`
      : "Your organisation is not licensed for any region yet: ask your account manager.";
  }

  async function loadRegions() {
    const layer = L.geoJSON(null, {
      interactive: false,
      style: { color: "#475569", weight: 1.5, fillColor: "#94a3b8", fillOpacity: 0.08, dashArray: "4 3" },
    }).addTo(map);
    let path = "regions/?limit=1000";
    try {
      while (path) {
        const page = await api(path);
        for (const region of page.results) {
          layer.addData({ type: "Feature", properties: region, geometry: region.geometry });
        }
        path = page.next ? new URL(page.next).pathname + new URL(page.next).search : null;
      }
    } catch (error) {
      $("area-error").textContent = `The regions could not be loaded: ${error.message}`;
      return;
    }
    layer.eachLayer((region) => {
      const { code, name } = region.feature.properties;
      region.getElement().setAttribute("data-region", code);
      region.bindTooltip(name, { permanent: true, direction: "center", className: "region-label" });
    });
    if (layer.getLayers().length) map.fitBounds(layer.getBounds(), { padding: [10, 10] });
  }

  function startDrawing(kind) {
    Object.values(drawHandlers).forEach((handler) => handler.disable());
    $("area-error").textContent = "";
    drawHandlers[kind].enable();
  }

  // A drawn shape, or a file's layer with the geometry as the file has it (not as Leaflet rounds it).
  function setArea(layer, geometry = layer.toGeoJSON().geometry) {
    drawnLayer.clearLayers();
    drawnLayer.addLayer(layer);
    const km2 = polygonsOf(geometry).reduce((sum, rings) => sum + ringKm2(rings[0]) - holesKm2(rings), 0);
    area = { geometry, km2 };
    $("area-info").textContent = `Your area: ${km2.toFixed(2)} km². Draw again or upload a file to replace it.`;
    $("area-error").textContent = "";
    $("clear-area").disabled = false;
    invalidateQuote();
  }

  function clearArea() {
    drawnLayer.clearLayers();
    area = null;
    $("clear-area").disabled = true;
    $("area-info").textContent = "Draw an area on the map or upload a GeoJSON Polygon.";
    invalidateQuote();
  }

  const polygonsOf = (geometry) => (geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates);
  const ringKm2 = (ring) => L.GeometryUtil.geodesicArea(ring.map(([lng, lat]) => L.latLng(lat, lng))) / 1e6;
  const holesKm2 = (rings) => rings.slice(1).reduce((sum, ring) => sum + ringKm2(ring), 0);

  // A GeoJSON file: a Polygon or MultiPolygon, bare, in a Feature or in a FeatureCollection.
  function nameInFile(data) {
    const feature = data.type === "FeatureCollection" ? data.features[0] : data;
    const name = feature && feature.properties && feature.properties.name;
    return typeof name === "string" ? name : null;
  }

  function geometryOfFile(data) {
    const polygons = [];
    const add = (geometry) => {
      if (!geometry) return;
      if (geometry.type === "Polygon") polygons.push(geometry.coordinates);
      else if (geometry.type === "MultiPolygon") polygons.push(...geometry.coordinates);
      else if (geometry.type === "GeometryCollection") geometry.geometries.forEach(add);
    };
    if (data.type === "FeatureCollection") data.features.forEach((feature) => add(feature.geometry));
    else if (data.type === "Feature") add(data.geometry);
    else add(data);
    if (!polygons.length) throw new Error("the file holds no Polygon or MultiPolygon");
    return polygons.length === 1
      ? { type: "Polygon", coordinates: polygons[0] }
      : { type: "MultiPolygon", coordinates: polygons };
  }

  $("geojson-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    try {
      const data = JSON.parse(await file.text());
      const geometry = geometryOfFile(data);
      const layer = L.geoJSON(geometry, { style: { color: "#c2410c", weight: 3, fillOpacity: 0.15 } });
      setArea(layer, geometry);
      map.fitBounds(layer.getBounds(), { padding: [40, 40], maxZoom: 14 });
      $("area-name").value = nameInFile(data) || file.name.replace(/\.(geo)?json$/i, "");
    } catch (error) {
      $("area-error").textContent = `${file.name}: ${error.message}`;
    }
  });
  $("draw-polygon").addEventListener("click", () => startDrawing("polygon"));
  $("draw-rectangle").addEventListener("click", () => startDrawing("rectangle"));
  $("clear-area").addEventListener("click", clearArea);

  // --- the order form ---------------------------------------------------------------------

  async function loadProducts() {
    products = await api("products/");
    const select = $("product");
    select.replaceChildren();
    for (const product of products) {
      const option = new Option(product.granted ? product.name : `${product.name} (not licensed)`, product.code);
      option.disabled = !product.granted;
      select.append(option);
    }
    const first = products.find((p) => p.granted && p.code === "footfall") || products.find((p) => p.granted);
    if (first) select.value = first.code;
    productChanged();
  }

  function productChanged() {
    const product = products.find((p) => p.code === $("product").value);
    $("product-description").textContent = product ? product.description : "";
    $("compare-fields").hidden = !product || product.code !== "compare";
    const options = $("breakdown-options");
    options.replaceChildren();
    for (const breakdown of product ? product.breakdowns : []) {
      const label = document.createElement("label");
      label.className = "check";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = breakdown;
      label.append(box, ` ${breakdown.replace("_", " ")}`);
      options.append(label);
    }
    $("breakdowns").hidden = !options.children.length;
  }

  // A local day as the API reads it: a time without offset is in the organisation's time zone.
  const dayStart = (day) => `${day}T00:00:00`;
  function nextDay(day) {
    const date = new Date(`${day}T00:00:00Z`);
    date.setUTCDate(date.getUTCDate() + 1);
    return date.toISOString().slice(0, 10);
  }
  function previousDay(day) {
    const date = new Date(`${day}T00:00:00Z`);
    date.setUTCDate(date.getUTCDate() - 1);
    return date.toISOString().slice(0, 10);
  }

  function orderBody() {
    if (!area) throw new Error("Draw an area on the map or upload one first.");
    const first = $("first-day").value;
    const last = $("last-day").value;
    if (!first || !last) throw new Error("Choose the first and the last day.");
    const body = {
      product: $("product").value,
      name: $("area-name").value.trim(),
      geometry: area.geometry,
      start: dayStart(first),
      end: dayStart(nextDay(last)),
      granularity: $("granularity").value,
    };
    const breakdowns = [...$("breakdown-options").querySelectorAll("input:checked")].map((box) => box.value);
    if (breakdowns.length) body.breakdowns = breakdowns;
    if (body.product === "compare") {
      const compareFirst = $("compare-first-day").value;
      const compareLast = $("compare-last-day").value;
      if (!compareFirst || !compareLast) throw new Error("Choose the period to compare with.");
      body.compare_start = dayStart(compareFirst);
      body.compare_end = dayStart(nextDay(compareLast));
    }
    return body;
  }

  function invalidateQuote() {
    quote = null;
    $("quote").hidden = true;
  }

  function resetOrder() {
    invalidateQuote();
    $("order-error").textContent = "";
  }

  $("order-form").addEventListener("input", invalidateQuote);
  $("order-form").addEventListener("change", (event) => {
    if (event.target.id === "product") productChanged();
    invalidateQuote();
  });

  $("order-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("order-error").textContent = "";
    let body;
    try {
      body = orderBody();
    } catch (error) {
      $("order-error").textContent = error.message;
      return;
    }
    const button = $("get-quote");
    button.disabled = true;
    try {
      showQuote(await api("quotes/", { method: "POST", body }), body);
    } catch (error) {
      $("order-error").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });

  function showQuote(answer, body) {
    // One Idempotency-Key per quote: however often the order is retried, it is placed once.
    quote = { id: answer.id, body, idempotencyKey: crypto.randomUUID() };
    $("quote-amount").textContent = `${answer.amount} ${answer.currency}`;
    $("quote-detail").textContent = `for ${answer.quantity} ${answer.unit.replace("_", "-")}s at ${Number(
      answer.unit_price
    )} ${answer.currency} each`;
    const list = $("quote-checks");
    list.replaceChildren();
    for (const check of answer.checks) {
      const item = document.createElement("li");
      item.className = check.passed ? "passed" : "failed";
      item.textContent = check.passed
        ? check.check.replaceAll("_", " ")
        : `${check.check.replaceAll("_", " ")}: ${check.detail}`;
      list.append(item);
    }
    $("quote-expiry").textContent = `The price holds until ${formatTime(answer.expires_at)}.`;
    const order = $("place-order");
    order.disabled = !answer.orderable;
    order.textContent = answer.orderable
      ? `Order for ${answer.amount} ${answer.currency}`
      : "Not orderable: see the checks above";
    $("quote").hidden = false;
  }

  $("place-order").addEventListener("click", async () => {
    if (!quote) return;
    const button = $("place-order");
    button.disabled = true;
    $("order-error").textContent = "";
    const { body, id, idempotencyKey } = quote;
    try {
      let report = null;
      for (let attempt = 1; !report; attempt += 1) {
        try {
          report = await api("reports/", {
            method: "POST",
            body: { ...body, quote: id },
            headers: { "Idempotency-Key": idempotencyKey },
          });
        } catch (error) {
          // A lost connection (fetch's TypeError) or a busy server: the same key places it once.
          const retry = error instanceof TypeError || [429, 503].includes(error.status);
          if (!retry || attempt >= 4) throw error;
          await sleep(1000 * Math.max(attempt, error.retryAfter || 0));
        }
      }
      invalidateQuote();
      loadReports();
      watch(report);
    } catch (error) {
      $("order-error").textContent = error.message;
      button.disabled = false;
    }
  });

  // --- a report: progress, chart, table, downloads -----------------------------------------

  async function watch(report) {
    const token = ++watching;
    currentReport = report;
    showReport(report);
    while (!FINAL.has(report.status)) {
      const asked = Date.now();
      try {
        report = await api(`reports/${report.id}/?wait=20`);
      } catch (error) {
        if (token !== watching) return;
        if (error.status && ![429, 503].includes(error.status)) {
          $("report-error").textContent = error.message;
          return;
        }
        await sleep(1000 * Math.max(2, error.retryAfter || 0));
        continue;
      }
      if (token !== watching) return;
      currentReport = report;
      showReport(report);
      // Back at once while still running: the server's waiting slots were full, so pause first.
      if (!FINAL.has(report.status) && Date.now() - asked < 1000) await sleep(1000);
    }
    if (token !== watching) return;
    loadReports();
    if (report.status === "succeeded") await showResult(report, token);
  }

  function showReport(report) {
    $("report-section").hidden = false;
    $("report-title").lastChild.textContent = ` ${report.area_name || "Report"}`;
    const status = $("report-status");
    status.textContent = report.status;
    status.className = `badge ${report.status}`;
    $("report-meta").textContent = `${productName(report.product)} · ${period(report.start, report.end)} · by ${
      report.granularity
    } · ${report.cell_count} grid cells, ${Number(report.area_km2 || 0).toFixed(2)} km²${
      report.price ? ` · ${report.price.amount} ${report.price.currency}` : ""
    }`;
    const percent = Math.round(100 * (report.status === "succeeded" ? 1 : report.progress || 0));
    $("progress").value = percent;
    $("progress-box").hidden = report.status !== "queued" && report.status !== "running";
    $("progress-text").textContent =
      report.status === "queued" ? "Queued: waiting for a worker…" : `Computing… ${percent}%`;
    $("report-error").textContent = report.status === "failed" ? `The report failed: ${report.error}` : "";
    if (report.status === "cancelled") $("report-error").textContent = "The report was cancelled.";
    if (report.status !== "succeeded") {
      $("result").hidden = true;
      if (resultLayer) resultLayer.remove();
    }
  }

  async function showResult(report, token) {
    try {
      const [result, rows] = await Promise.all([
        api(`reports/${report.id}/result.json`),
        api(`reports/${report.id}/rows/?limit=${TABLE_ROWS}`),
      ]);
      if (token !== watching) return;
      $("result").hidden = false;
      drawChart(result);
      drawTable(rows);
      $("result-note").textContent = resultNote(result, rows);
      document.querySelector('[data-download="geojson"]').hidden = report.product === "compare";
      await drawCells(report, token);
    } catch (error) {
      $("report-error").textContent = `The result could not be shown: ${error.message}`;
    }
  }

  function resultNote(result, rows) {
    const notes = [];
    if (result.privacy) {
      const share = result.privacy.released_share;
      notes.push(
        `${share === null || share === undefined ? "–" : (100 * share).toFixed(1)}% of the area's cell-hours were` +
          ` published (values under k = ${result.privacy.k} are withheld, so numbers may undercount).`
      );
    }
    if (result.metric === "person_hours") notes.push("Person-hours: people present, summed over each bucket's hours.");
    if (rows.count > rows.results.length) {
      notes.push(`The table shows the first ${rows.results.length} of ${rows.count} rows: download the CSV for all.`);
    }
    return notes.join(" ");
  }

  function drawChart(result) {
    if (chart) chart.destroy();
    const metric = result.metric || "person_hours";
    const label = metric.replace("_", "-");
    let config;
    if (Array.isArray(result.regions)) {
      const regions = result.regions.filter((r) => r[metric] !== null).slice(0, 20);
      config = barChart(
        regions.map((r) => r.name || r.region),
        regions.map((r) => r[metric]),
        `${label} by home region`
      );
    } else if (Array.isArray(result.matrix) && Array.isArray(result.zones)) {
      const pairs = [];
      result.zones.forEach((origin, i) =>
        result.zones.forEach((destination, j) => {
          const value = result.matrix[i][j];
          if (value !== null) pairs.push([i === j ? `within ${origin.name}` : `${origin.name} → ${destination.name}`, value]);
        })
      );
      pairs.sort((a, b) => b[1] - a[1]);
      const top = pairs.slice(0, 20);
      config = barChart(
        top.map((p) => p[0]),
        top.map((p) => p[1]),
        "trips between zones"
      );
    } else {
      const series = result.series || [];
      const datasets = [
        {
          label: `${label} (${result.product})`,
          data: series.map((bucket) => bucket[metric]),
          borderColor: "#c2410c",
          backgroundColor: "rgba(194, 65, 12, 0.12)",
          fill: true,
          spanGaps: false,
          tension: 0,
        },
      ];
      if (series.length && `comparison_${metric}` in series[0]) {
        datasets.push({
          label: `${label}, comparison period`,
          data: series.map((bucket) => bucket[`comparison_${metric}`]),
          borderColor: "#475569",
          borderDash: [6, 4],
          fill: false,
          tension: 0,
        });
      }
      datasets.push(...segmentLines(result, metric));
      config = {
        type: "line",
        data: { labels: series.map((bucket) => bucketLabel(bucket.start, result.granularity)), datasets },
        options: chartOptions(label),
      };
    }
    chart = new Chart($("chart"), config);
  }

  // A broken-down report: a thinner line per segment (age band, gender, dwell band), up to eight.
  const PALETTE = ["#0f766e", "#7c3aed", "#2563eb", "#db2777", "#65a30d", "#0891b2", "#a16207", "#475569"];
  function segmentLines(result, metric) {
    const segments = new Map();
    for (const row of result.segments || []) {
      const name = ["age_band", "gender", "dwell_band"]
        .filter((field) => row[field] && row[field] !== "*")
        .map((field) => row[field])
        .join(" ");
      if (!segments.has(name)) segments.set(name, new Map());
      segments.get(name).set(row.start, row[metric]);
    }
    if (segments.size > PALETTE.length) return [];
    return [...segments].map(([name, values], index) => ({
      label: name,
      data: (result.series || []).map((bucket) => (values.has(bucket.start) ? values.get(bucket.start) : null)),
      borderColor: PALETTE[index],
      borderWidth: 1.5,
      pointRadius: 1,
      fill: false,
      tension: 0,
    }));
  }

  function barChart(labels, data, title) {
    return {
      type: "bar",
      data: { labels, datasets: [{ label: title, data, backgroundColor: "#ea580c" }] },
      options: chartOptions(title),
    };
  }

  function chartOptions(yTitle) {
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: { y: { beginAtZero: true, title: { display: true, text: yTitle } } },
      plugins: { legend: { position: "bottom" } },
    };
  }

  function drawTable(rows) {
    const table = $("result-table");
    table.replaceChildren();
    if (!rows.results.length) return;
    const columns = tableColumns(Object.keys(rows.results[0]), currentReport && currentReport.product);
    const head = table.createTHead().insertRow();
    for (const column of columns) {
      const th = document.createElement("th");
      th.textContent = column.replaceAll("_", " ");
      head.append(th);
    }
    const body = table.createTBody();
    for (const row of rows.results) {
      const tr = body.insertRow();
      for (const column of columns) {
        const cell = tr.insertCell();
        const value = row[column];
        cell.textContent = value === null || value === undefined ? "–" : cellText(column, value);
        if (typeof value === "number") cell.className = "number";
      }
    }
  }

  // The CSV's columns in a reading order; the deprecated twins of the metric are left out.
  const FIRST_COLUMNS = ["start", "end", "hours", "region", "name", "origin", "destination", "age_band", "gender"];
  const DEPRECATED = {
    footfall: ["visits"],
    compare: ["visits", "comparison_visits"],
    dwell: ["visitors"],
    catchment: ["visitors"],
  };
  function tableColumns(keys, product) {
    const hidden = DEPRECATED[product] || [];
    const shown = keys.filter((key) => !hidden.includes(key));
    const first = FIRST_COLUMNS.filter((key) => shown.includes(key));
    return [...first, ...shown.filter((key) => !first.includes(key))];
  }

  function cellText(column, value) {
    if (column.endsWith("share") && typeof value === "number") return `${(100 * value).toFixed(1)}%`;
    if (typeof value === "number") return value.toLocaleString("en");
    if (typeof value === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value)) return formatTime(value);
    return String(value);
  }

  // The result's grid cells on the map, shaded by their count (GET result.geojson).
  async function drawCells(report, token) {
    if (resultLayer) resultLayer.remove();
    resultLayer = null;
    if (report.product === "compare") return;
    let collection;
    try {
      collection = await (await api(`reports/${report.id}/result.geojson`, { raw: true })).json();
    } catch (error) {
      return; // a map is a bonus: the chart and table are shown already
    }
    if (token !== watching) return;
    const values = collection.features
      .map((feature) => feature.properties && feature.properties.person_hours)
      .filter((value) => typeof value === "number");
    const top = Math.max(1, ...values);
    resultLayer = L.geoJSON(collection, {
      interactive: false,
      style: (feature) => {
        const value = feature.properties.person_hours;
        const shade = typeof value === "number" ? 0.15 + 0.6 * (value / top) : 0;
        return { color: "#7c2d12", weight: 0.5, fillColor: "#ea580c", fillOpacity: shade };
      },
    }).addTo(map);
    resultLayer.bringToBack();
  }

  document.querySelector(".downloads").addEventListener("click", async (event) => {
    const format = event.target.dataset && event.target.dataset.download;
    if (!format || !currentReport) return;
    event.target.disabled = true;
    try {
      await download(currentReport.id, format);
    } catch (error) {
      $("report-error").textContent = `The download failed: ${error.message}`;
    } finally {
      event.target.disabled = false;
    }
  });

  // The downloads need the Authorization header, so they come through fetch as a blob, saved
  // under the name the server gives: the key never goes into a URL.
  async function download(reportId, format) {
    const response = await api(`reports/${reportId}/result.${format}`, { raw: true });
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename="([^"]+)"/.exec(disposition);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = match ? match[1] : `report-${reportId}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  }

  // --- past reports -----------------------------------------------------------------------

  async function loadReports() {
    let page;
    try {
      page = await api("reports/?limit=50");
    } catch (error) {
      $("reports-empty").hidden = false;
      $("reports-empty").textContent = `Your reports could not be loaded: ${error.message}`;
      return;
    }
    const body = $("reports-table").tBodies[0];
    body.replaceChildren();
    for (const report of page.results) {
      const row = body.insertRow();
      row.dataset.report = report.id;
      const cells = [
        formatTime(report.created_at),
        productName(report.product),
        report.area_name || "–",
        period(report.start, report.end),
        report.granularity,
      ];
      for (const text of cells) row.insertCell().textContent = text;
      const status = document.createElement("span");
      status.className = `badge ${report.status}`;
      status.textContent = report.status;
      row.insertCell().append(status);
      const open = document.createElement("button");
      open.type = "button";
      open.className = "secondary small";
      open.textContent = "Open";
      open.addEventListener("click", async () => {
        try {
          watch(await api(`reports/${report.id}/`));
          $("report-section").scrollIntoView({ behavior: "smooth" });
        } catch (error) {
          $("report-error").textContent = error.message;
        }
      });
      row.insertCell().append(open);
    }
    $("reports-empty").textContent = "No reports yet: draw an area and order one above.";
    $("reports-empty").hidden = page.results.length > 0;
    // A first visit: the form starts at the period of the newest report.
    const newest = page.results[0];
    if (newest && !$("first-day").value && !$("last-day").value) {
      $("first-day").value = newest.start.slice(0, 10);
      $("last-day").value = previousDay(newest.end.slice(0, 10));
    }
  }
  $("refresh-reports").addEventListener("click", loadReports);

  // --- formatting -------------------------------------------------------------------------

  const productName = (code) => (products.find((p) => p.code === code) || { name: code }).name;

  // Times come with the organisation's offset: shown as that local time, without reparsing.
  function formatTime(iso) {
    return iso ? iso.slice(0, 16).replace("T", " ") : "–";
  }

  function period(start, end) {
    const first = start.slice(0, 10);
    const midnight = end.slice(11, 19) === "00:00:00";
    const last = midnight ? previousDay(end.slice(0, 10)) : formatTime(end);
    return first === last ? first : `${first} to ${last}`;
  }

  function bucketLabel(start, granularity) {
    if (granularity === "hour") return start.slice(5, 16).replace("T", " ");
    if (granularity === "month") return start.slice(0, 7);
    return start.slice(0, 10);
  }

  // --- start ------------------------------------------------------------------------------

  function startApp() {
    initMap();
    map.invalidateSize();
    resetOrder();
    loadProducts()
      .catch((error) => {
        $("order-error").textContent = `The products could not be loaded: ${error.message}`;
      })
      .finally(loadReports); // after the products: the list names them
  }

  if (apiKey) {
    signIn(apiKey).catch(() => signOut("Please sign in again."));
  }
})();
