//! A pipeline compiled once into what decode, the engine, the sinks, the
//! read API and the join share ([`Plan`]): the fields read and their value
//! slots, the accumulators and where they live in a row, the filters, how
//! each feature's value is made and what type it has, the key types, and
//! the request-time (`on_read:`) features. Nothing here re-derives what
//! another part derived; every consumer holds the same `Arc<Plan>`.

use std::sync::Arc;

use crate::aggregate::moments::MOMENTS_WORDS;
use crate::aggregate::{AccKind, AggKind, AggParams, Heavy, Moments, RowLayout, Value};
use crate::config::expr::{Compiled, Val};
use crate::config::{FeatureKind, KeyType, Pipeline, ValueType};
use crate::event::DecodePlan;
use crate::time::Micros;

/// How one feature's value is made.
#[derive(Debug)]
pub enum Output {
    /// Aggregate `agg` of row accumulator `acc`.
    Agg {
        acc: usize,
        agg: AggKind,
        params: AggParams,
    },
    /// An expression over the pane's other features and its window bounds
    /// (identifiers: feature indexes, then `window_start`, `window_end`).
    Derived(Compiled),
    /// Whether the set of accumulator `acc` was cut.
    SetCut(usize),
}

/// A request-time feature, compiled.
#[derive(Debug)]
pub struct OnRead {
    pub name: String,
    /// Identifiers: feature indexes, then `now`, `window_start`, `window_end`.
    expr: Compiled,
    /// The stored features it reads (indexes), ascending.
    pub deps: Vec<usize>,
}

/// A feature's value read straight from a row's words (the common
/// aggregates), or through the row layout.
#[derive(Debug, Clone, Copy)]
enum Finish {
    Count(usize),
    Sum(usize),
    Mean(usize),
    Min(usize),
    Max(usize),
    Other,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Plan {
    pub pipeline: Pipeline,
    pub decode: DecodePlan,
    pub row: RowLayout,
    /// `where:` filters, each compiled once (over value slots).
    pub filters: Vec<Compiled>,
    /// One per feature, in the pipeline's order.
    pub outputs: Vec<Output>,
    /// Derived features in dependency order.
    derived_order: Vec<usize>,
    /// Per feature: how its value is read.
    finishes: Vec<Finish>,
    /// The type of each feature's values (Parquet column, online text, reads).
    pub types: Vec<ValueType>,
    pub key_types: Vec<KeyType>,
    pub on_read: Vec<OnRead>,
}

/// A shared plan.
pub type PlanRef = Arc<Plan>;

impl Plan {
    /// Compiles a checked pipeline.
    pub fn new(p: &Pipeline) -> PlanRef {
        let decode = DecodePlan::new(p);
        let mut row = RowLayout::default();
        let mut filters: Vec<Compiled> = Vec::new();
        let mut filter_texts: Vec<String> = Vec::new();
        let mut outputs = Vec::new();
        let n = p.features.len();
        let feature_index = |name: &str| {
            p.features
                .iter()
                .position(|f| f.name == name)
                .expect("validated reference")
        };
        for f in &p.features {
            outputs.push(match &f.kind {
                FeatureKind::Agg {
                    agg,
                    field,
                    filter,
                    params,
                } => {
                    let fi = filter.as_ref().map(|e| {
                        let text = e.to_string();
                        if let Some(i) = filter_texts.iter().position(|t| *t == text) {
                            i
                        } else {
                            filter_texts.push(text);
                            filters.push(e.compile(&mut |name| {
                                decode.slot_of(name).expect("filter fields are decoded")
                            }));
                            filters.len() - 1
                        }
                    });
                    let slot = field
                        .as_ref()
                        .map(|n| decode.slot_of(n).expect("aggregated fields are decoded"));
                    let acc = row.acc(AccKind::of(*agg, slot, params), fi);
                    Output::Agg {
                        acc,
                        agg: *agg,
                        params: *params,
                    }
                }
                FeatureKind::Derived(e) => Output::Derived(e.compile(&mut |id| match id {
                    "window_start" => n,
                    "window_end" => n + 1,
                    name => feature_index(name),
                })),
                FeatureKind::SetCut(set) => match outputs.get(*set) {
                    Some(Output::Agg { acc, .. }) => Output::SetCut(*acc),
                    _ => unreachable!("a set's flag follows the set"),
                },
            });
        }
        let on_read = p
            .on_read
            .iter()
            .map(|r| {
                let mut deps: Vec<usize> = r
                    .expr
                    .idents()
                    .into_iter()
                    .filter_map(|id| p.features.iter().position(|f| f.name == id))
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                OnRead {
                    name: r.name.clone(),
                    expr: r.expr.compile(&mut |id| match id {
                        "now" => n,
                        "window_start" => n + 1,
                        "window_end" => n + 2,
                        name => feature_index(name),
                    }),
                    deps,
                }
            })
            .collect();
        let derived_order = derived_order(p);
        let finishes = outputs
            .iter()
            .map(|o| match o {
                Output::Agg { acc, agg, .. } => {
                    let w = row.word_of(*acc);
                    let counts = matches!(
                        row.accs()[*acc].kind,
                        AccKind::CountEvents | AccKind::CountField(_)
                    );
                    match agg {
                        AggKind::Count if counts => Finish::Count(w),
                        AggKind::Sum => Finish::Sum(w),
                        AggKind::Mean => Finish::Mean(w),
                        AggKind::Min => Finish::Min(w),
                        AggKind::Max => Finish::Max(w),
                        _ => Finish::Other,
                    }
                }
                _ => Finish::Other,
            })
            .collect();
        Arc::new(Plan {
            finishes,
            decode,
            row,
            filters,
            outputs,
            derived_order,
            types: p.features.iter().map(|f| f.output_type()).collect(),
            key_types: p.key_types.clone(),
            on_read,
            pipeline: p.clone(),
        })
    }

    /// Number of features (values per pane).
    pub fn width(&self) -> usize {
        self.outputs.len()
    }

    /// Appends one value per feature of the window `[start, end)` whose
    /// accumulators are the row `(words, heavy)`.
    pub fn write_values(
        &self,
        words: &[u64],
        heavy: &[Heavy],
        start: Micros,
        end: Micros,
        out: &mut Vec<Value>,
    ) {
        let base = out.len();
        let float = |x: Option<f64>| x.map_or(Value::Null, Value::Float);
        out.extend(
            self.outputs
                .iter()
                .zip(&self.finishes)
                .map(|(o, f)| match (f, o) {
                    (Finish::Count(w), _) => Value::Int(words[*w] as i64),
                    (Finish::Sum(w), _) => {
                        float(Moments::load(&words[*w..*w + MOMENTS_WORDS]).sum())
                    }
                    (Finish::Mean(w), _) => {
                        float(Moments::load(&words[*w..*w + MOMENTS_WORDS]).mean())
                    }
                    (Finish::Min(w), _) => {
                        float(crate::aggregate::extremes::min(&words[*w..*w + 2]))
                    }
                    (Finish::Max(w), _) => {
                        float(crate::aggregate::extremes::max(&words[*w..*w + 2]))
                    }
                    (Finish::Other, Output::Agg { acc, agg, params }) => {
                        self.row.finish(*acc, *agg, params, words, heavy)
                    }
                    (Finish::Other, Output::SetCut(acc)) => {
                        Value::Bool(self.row.set_cut(*acc, heavy))
                    }
                    (Finish::Other, Output::Derived(_)) => Value::Null,
                }),
        );
        if self.derived_order.is_empty() {
            return;
        }
        let n = self.outputs.len();
        let row = &mut out[base..];
        for &i in &self.derived_order {
            if let Output::Derived(c) = &self.outputs[i] {
                let v = {
                    let get = |j: usize| {
                        if j == n {
                            Val::Num((start.div_euclid(1000)) as f64)
                        } else if j == n + 1 {
                            Val::Num((end.div_euclid(1000)) as f64)
                        } else {
                            match row[j].as_f64() {
                                Some(x) => Val::Num(x),
                                None => Val::Null,
                            }
                        }
                    };
                    match c.eval(&get) {
                        Val::Num(x) => Value::Float(x),
                        _ => Value::Null,
                    }
                };
                row[i] = v;
            }
        }
    }

    /// The value of request-time feature `i` for a pane's `values` of the
    /// window `[start, end)`, at time `now` (all in microseconds; the
    /// expression sees milliseconds). The read API calls this with the
    /// request time, the point-in-time join with each entity row's time.
    pub fn on_read_value(
        &self,
        i: usize,
        values: &[Value],
        start: Micros,
        end: Micros,
        now: Micros,
    ) -> Value {
        match self.on_read_eval(
            i,
            |j| values.get(j).and_then(Value::as_f64),
            start,
            end,
            now,
        ) {
            Some(x) => Value::Float(x),
            None => Value::Null,
        }
    }

    /// [`Plan::on_read_value`] with `feature(j)` giving stored feature `j`
    /// as a number (the read API parses it from its text, the join from its
    /// column); `None` is null.
    pub fn on_read_eval(
        &self,
        i: usize,
        feature: impl Fn(usize) -> Option<f64>,
        start: Micros,
        end: Micros,
        now: Micros,
    ) -> Option<f64> {
        let n = self.outputs.len();
        let ms = |t: Micros| Val::Num(t.div_euclid(1000) as f64);
        let get = |j: usize| {
            if j == n {
                ms(now)
            } else if j == n + 1 {
                ms(start)
            } else if j == n + 2 {
                ms(end)
            } else {
                match feature(j) {
                    Some(x) => Val::Num(x),
                    None => Val::Null,
                }
            }
        };
        match self.on_read[i].expr.eval(&get) {
            Val::Num(x) if x.is_finite() => Some(x),
            _ => None,
        }
    }
}

/// Derived features in an order where each comes after what it reads
/// (validation refused cycles).
fn derived_order(p: &Pipeline) -> Vec<usize> {
    let mut order = Vec::new();
    let mut done: Vec<bool> = p
        .features
        .iter()
        .map(|f| !matches!(f.kind, FeatureKind::Derived(_)))
        .collect();
    loop {
        let before = order.len();
        for (i, f) in p.features.iter().enumerate() {
            if done[i] {
                continue;
            }
            if let FeatureKind::Derived(e) = &f.kind {
                let ready = e.idents().iter().all(|n| {
                    crate::config::WINDOW_NAMES.contains(n)
                        || p.features
                            .iter()
                            .position(|g| g.name == *n)
                            .is_some_and(|j| done[j])
                });
                if ready {
                    done[i] = true;
                    order.push(i);
                }
            }
        }
        if order.len() == before {
            return order;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_features_read_the_window_bounds_and_on_read_reads_now() {
        let p = crate::config::test_pipeline(
            "[user_id]",
            "  - { name: n, agg: count }\n  - { name: span_ms, expr: window_end - window_start }\n  - { name: age_ms, on_read: now - window_end + n }\n",
        );
        let plan = Plan::new(&p);
        let mut words = Vec::new();
        let mut heavy = Vec::new();
        plan.row.push_empty(&mut words, &mut heavy);
        let mut out = Vec::new();
        plan.write_values(&words, &heavy, 60_000_000, 120_000_000, &mut out);
        assert_eq!(out, vec![Value::Int(0), Value::Float(60_000.0)]);
        assert_eq!(
            plan.on_read_value(0, &out, 60_000_000, 120_000_000, 125_000_000),
            Value::Float(5_000.0)
        );
    }
}
