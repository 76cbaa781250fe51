//! The catalog page: server-rendered HTML with a little JavaScript for
//! search as you type and live freshness badges.

use std::fmt::Write as _;

use super::freshness::Freshness;
use super::registry::{describe, Registry};

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; color: #1d2330; }
a { color: #1f5fbf; text-decoration: none; } a:hover { text-decoration: underline; }
input#search { width: 100%; font-size: 1.1rem; padding: .5rem; box-sizing: border-box; }
ul#groups { list-style: none; padding: 0; }
li.group { border: 1px solid #d8dce3; border-radius: 6px; padding: .8rem 1rem; margin: .6rem 0; }
li.group[hidden] { display: none; }
.meta { color: #5a6270; font-size: .9rem; }
.tag { background: #eef1f6; border-radius: 3px; padding: 0 .35rem; margin-right: .25rem; font-size: .85rem; }
.badge { border-radius: 3px; padding: .1rem .45rem; font-size: .85rem; color: #fff; }
.badge[data-status=fresh] { background: #2e8540; }
.badge[data-status=late] { background: #c0392b; }
.badge[data-status=unknown] { background: #8a919c; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; border-bottom: 1px solid #e3e6eb; padding: .3rem .5rem; vertical-align: top; }
code { font-size: .9rem; }
.matched { font-size: .9rem; }
"#;

fn badge(group: &str, f: Option<&Freshness>) -> String {
    let status = f.map_or("unknown", |f| f.status);
    let title = match f.and_then(|f| f.watermark_lag_seconds) {
        Some(l) => format!("watermark lag {l:.1} s"),
        None => "no watermark reported yet".to_string(),
    };
    format!(
        r#"<span class="badge" data-group="{}" data-status="{status}" title="{}">{status}</span>"#,
        esc(group),
        esc(&title)
    )
}

const SCRIPT_FRESHNESS: &str = r#"
async function refreshFreshness() {
  try {
    const r = await fetch('/v1/freshness');
    const j = await r.json();
    for (const f of j.pipelines) {
      for (const b of document.querySelectorAll('.badge[data-group="' + f.pipeline + '"]')) {
        b.dataset.status = f.status;
        b.textContent = f.status;
        b.title = f.watermark_lag_seconds == null ? 'no watermark reported yet'
          : 'watermark lag ' + f.watermark_lag_seconds.toFixed(1) + ' s';
      }
      const lag = document.getElementById('lag');
      if (lag && lag.dataset.group === f.pipeline) {
        lag.textContent = f.watermark_lag_seconds == null ? 'unknown' : f.watermark_lag_seconds.toFixed(1) + ' s';
      }
    }
  } catch (e) { /* the page keeps its last figures */ }
}
setInterval(refreshFreshness, 5000);
"#;

const SCRIPT_SEARCH: &str = r#"
const box = document.getElementById('search');
const list = document.getElementById('groups');
const count = document.getElementById('count');
const all = Array.from(list.querySelectorAll('li.group'));
let seq = 0;
async function runSearch() {
  const q = box.value.trim();
  const mine = ++seq;
  history.replaceState(null, '', q ? '/?q=' + encodeURIComponent(q) : '/');
  if (!q) {
    for (const li of all) { li.hidden = false; li.querySelector('.matched').textContent = ''; list.appendChild(li); }
    count.textContent = all.length + ' feature groups';
    return;
  }
  const r = await fetch('/v1/search?q=' + encodeURIComponent(q));
  const j = await r.json();
  if (mine !== seq) return;
  const order = [];
  const feats = {};
  for (const h of j.hits) {
    if (!order.includes(h.group)) order.push(h.group);
    if (h.kind === 'feature') (feats[h.group] = feats[h.group] || []).push(h.id.split(':')[1]);
  }
  for (const li of all) { li.hidden = !order.includes(li.dataset.name); }
  for (const g of order) {
    const li = all.find(x => x.dataset.name === g);
    if (!li) continue;
    li.querySelector('.matched').textContent = feats[g] ? 'matching features: ' + feats[g].join(', ') : '';
    list.appendChild(li);
  }
  count.textContent = order.length + ' of ' + all.length + ' feature groups match';
}
box.addEventListener('input', runSearch);
"#;

/// The catalog: every group (or those matching `query`, best first).
pub fn index(reg: &Registry, fresh: &[Freshness], query: &str) -> String {
    let groups = reg.list();
    let hits = reg.search(query);
    let mut order: Vec<&str> = Vec::new();
    let mut matched: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    if query.trim().is_empty() {
        order = groups.iter().map(|g| g.name.as_str()).collect();
    } else {
        for h in &hits {
            if !order.contains(&h.group.as_str()) {
                order.push(&h.group);
            }
            if h.kind == "feature" {
                let f = h.id.split_once(':').map_or("", |x| x.1);
                matched.entry(h.group.as_str()).or_default().push(f);
            }
        }
    }
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rill feature catalog</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>
<h1>Feature catalog</h1>
<p class="meta">Feature groups declared by the pipeline files this server runs. Search names, descriptions, tags, owners and teams.</p>
<input id="search" type="search" placeholder="Search features" autocomplete="off" value="{}">
<p id="count" class="meta">{}</p>
<ul id="groups">"#,
        esc(query),
        if query.trim().is_empty() {
            format!("{} feature groups", groups.len())
        } else {
            format!("{} of {} feature groups match", order.len(), groups.len())
        }
    );
    // Matching groups first, in rank order; the others hidden.
    let mut rest: Vec<&str> = groups
        .iter()
        .map(|g| g.name.as_str())
        .filter(|n| !order.contains(n))
        .collect();
    let shown = order.len();
    let mut all_names = order.clone();
    all_names.append(&mut rest);
    for (i, name) in all_names.iter().enumerate() {
        let g = groups
            .iter()
            .find(|g| g.name == *name)
            .expect("listed group");
        let f = fresh.iter().find(|f| f.pipeline == g.name);
        let _ = write!(
            s,
            r#"<li class="group" data-name="{n}"{hidden}><a class="name" href="/groups/{n}"><strong>{n}</strong></a> {badge}
<div>{desc}</div>
<div class="meta">owner {owner} · team {team} · key {keys} · {window} · {nf} features</div>
<div class="meta">{tags}</div>
<div class="matched meta">{m}</div></li>"#,
            n = esc(&g.name),
            hidden = if i >= shown { " hidden" } else { "" },
            badge = badge(&g.name, f),
            desc = esc(g.description.as_deref().unwrap_or("")),
            owner = esc(g.owner.as_deref().unwrap_or("-")),
            team = esc(g.team.as_deref().unwrap_or("-")),
            keys = esc(&g.entity_keys.join(", ")),
            window = esc(&g.window),
            nf = g.features.len(),
            tags = g
                .tags
                .iter()
                .map(|t| format!(r#"<span class="tag">{}</span>"#, esc(t)))
                .collect::<String>(),
            m = matched
                .get(g.name.as_str())
                .map(|v| format!("matching features: {}", esc(&v.join(", "))))
                .unwrap_or_default(),
        );
    }
    let _ = write!(
        s,
        "</ul><script>{SCRIPT_SEARCH}{SCRIPT_FRESHNESS}</script></body></html>"
    );
    s
}

/// One group's page: features, owners, lineage and live freshness.
pub fn group(reg: &Registry, fresh: &[Freshness], name: &str) -> Option<String> {
    let p = reg.get(name)?;
    let g = describe(p);
    let f = fresh.iter().find(|f| f.pipeline == g.name);
    let lineage = reg.lineage(name).ok()?;
    let mut s = String::new();
    let opt = |o: &Option<String>| esc(o.as_deref().unwrap_or("-"));
    let secs = |o: Option<f64>| o.map_or("unknown".to_string(), |x| format!("{x:.1} s"));
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{n} · rill feature catalog</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>
<p><a href="/">← all feature groups</a></p>
<h1 id="group-name">{n}</h1> {badge}
<p id="description">{desc}</p>
<table id="about">
<tr><th>owner</th><td id="owner">{owner}</td></tr>
<tr><th>team</th><td id="team">{team}</td></tr>
<tr><th>tags</th><td>{tags}</td></tr>
<tr><th>version</th><td>{version}</td></tr>
<tr><th>entity key</th><td id="keys">{keys}</td></tr>
<tr><th>source</th><td>{topic}</td></tr>
<tr><th>window</th><td>{window}, allowed lateness {lateness}</td></tr>
<tr><th>triggers</th><td>{triggers}</td></tr>
<tr><th>accumulation</th><td>{acc}</td></tr>
<tr><th>online</th><td>{online}</td></tr>
<tr><th>offline</th><td>{offline}</td></tr>
<tr><th>file</th><td>{file}</td></tr>
</table>
<h2>Freshness</h2>
<table id="freshness">
<tr><th>status</th><td>{badge}</td></tr>
<tr><th>freshness SLA</th><td>{sla}</td></tr>
<tr><th>watermark</th><td>{wm}</td></tr>
<tr><th>watermark lag</th><td id="lag" data-group="{n}">{lag}</td></tr>
<tr><th>since the last pane reached Redis</th><td>{on}</td></tr>
<tr><th>since the last pane reached Parquet</th><td>{off}</td></tr>
<tr><th>consumer lag</th><td>{clag}</td></tr>
</table>
<h2>Features</h2>
<table id="features"><tr><th>feature</th><th>definition</th><th>type</th><th>default</th><th>description</th></tr>"#,
        n = esc(&g.name),
        badge = badge(&g.name, f),
        desc = opt(&g.description),
        owner = opt(&g.owner),
        team = opt(&g.team),
        tags = g
            .tags
            .iter()
            .map(|t| format!(r#"<span class="tag">{}</span>"#, esc(t)))
            .collect::<String>(),
        version = g.version,
        keys = esc(&g.entity_keys.join(", ")),
        topic = esc(&match (&g.topic, &g.brokers) {
            (Some(t), Some(b)) => format!("Kafka topic {t} ({b}), event time {}", g.event_time),
            _ => format!("files (replay), event time {}", g.event_time),
        }),
        window = esc(&g.window),
        lateness = esc(&g.allowed_lateness),
        triggers = esc(&g.triggers),
        acc = g.accumulation,
        online = esc(&match (&g.sinks.online_key, &g.sinks.online_ttl) {
            (Some(k), Some(t)) => format!("Redis {k}, ttl {t}"),
            (Some(k), None) => format!("Redis {k}"),
            _ => "-".into(),
        }),
        offline = opt(&g.sinks.offline_path),
        file = opt(&g.file),
        sla = opt(&g.freshness_sla),
        wm = esc(f.and_then(|f| f.watermark.as_deref()).unwrap_or("none yet")),
        lag = secs(f.and_then(|f| f.watermark_lag_seconds)),
        on = secs(f.and_then(|f| f.seconds_since_online_write)),
        off = secs(f.and_then(|f| f.seconds_since_offline_write)),
        clag = f
            .and_then(|f| f.consumer_lag)
            .map_or("unknown".to_string(), |l| l.to_string()),
    );
    for fe in &g.features {
        let def = fe.definition();
        let _ = write!(
            s,
            r#"<tr class="feature" id="feature-{n}"><td><code>{n}</code></td><td><code>{d}</code></td><td>{t}</td><td>{def}</td><td>{desc}</td></tr>"#,
            n = esc(&fe.name),
            d = esc(&def),
            t = fe.value_type,
            def = fe
                .default
                .as_ref()
                .map_or(String::new(), |v| esc(&v.to_string())),
            desc = esc(fe.description.as_deref().unwrap_or("")),
        );
    }
    s.push_str("</table><h2>Lineage</h2><ul id=\"lineage\">");
    for n in &lineage.nodes {
        // What each node is computed from: `topic:x`, `pipeline:y`, `g:f` ids.
        let upstream: Vec<&str> = lineage
            .edges
            .iter()
            .filter(|(_, b)| *b == n.id)
            .map(|(a, _)| a.as_str())
            .collect();
        let _ = write!(
            s,
            r#"<li data-kind="{}">{} <strong>{}</strong>{}</li>"#,
            n.kind,
            n.kind,
            esc(&n.label),
            if upstream.is_empty() || n.kind == "sink" {
                String::new()
            } else {
                format!(" ← {}", esc(&upstream.join(", ")))
            }
        );
    }
    if !lineage.topic_shared_with.is_empty() {
        let _ = write!(
            s,
            "<li data-kind=\"shared\">the same topic also feeds {}</li>",
            lineage
                .topic_shared_with
                .iter()
                .map(|g| format!(r#"<a href="/groups/{0}">{0}</a>"#, esc(g)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = write!(s, "</ul><script>{SCRIPT_FRESHNESS}</script></body></html>");
    Some(s)
}

pub fn not_found(name: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>not found</title></head><body><p>No feature group named <code>{}</code>. <a href="/">All feature groups</a></p></body></html>"#,
        esc(name)
    )
}
