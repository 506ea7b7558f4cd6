//! The lineage graph of a warehouse: what each feature view, label and training set reads.
//!
//! Read from the registry's definitions, nothing else: a feature view or a label reads the tables
//! its query names (which may be other feature views' or labels' tables: every object's table
//! bears its name), a training set reads its label and its feature views. Edges go from an object
//! to each of its inputs; tables are leaves. [`dependencies`] lists the edges (the system table
//! `flywheel.dependencies`), [`upstream`] orders what an object depends on so that inputs come
//! first (the order `REFRESH` follows), and [`find_cycle`] says whether a new definition would make
//! an object read itself.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Query, Visit, Visitor};

use crate::objects::{
    FeatureViewDefinition, KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET, TrainingSetDefinition,
};
use crate::{Registry, Result};

/// The kinds of objects that have inputs, in the order they are listed.
pub const DERIVED_KINDS: [&str; 3] = [KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET];

/// One edge: `object` (of `kind`) reads `input` (of `input_kind`: an object kind, or `table`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    pub object: String,
    pub kind: &'static str,
    pub input: String,
    pub input_kind: &'static str,
}

/// The kind of the object or table named `name`: `feature_view`, `label`, `training_set`,
/// `table`, or `None` when nothing has that name.
pub fn kind_of(registry: &Registry, name: &str) -> Option<&'static str> {
    DERIVED_KINDS
        .into_iter()
        .find(|k| registry.object(k, name).is_some())
        .or_else(|| registry.table(name).map(|_| "table"))
}

/// The names the query `sql` reads (the last part of each table reference, folded to lower case
/// unless quoted), without the names of its own common table expressions, sorted.
pub fn query_relations(sql: &str) -> Vec<String> {
    let Ok(statements) = flywheel_sql::parse_sql(sql) else {
        return Vec::new();
    };
    let mut found = Relations::default();
    for statement in statements {
        let flywheel_sql::FlywheelStatement::DataFusion(statement) = statement else {
            continue;
        };
        if let datafusion::sql::parser::Statement::Statement(statement) = *statement {
            let _ = statement.visit(&mut found);
        }
    }
    found
        .tables
        .difference(&found.ctes)
        .cloned()
        .collect::<Vec<_>>()
}

#[derive(Default)]
struct Relations {
    tables: BTreeSet<String>,
    ctes: BTreeSet<String>,
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(identifier(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(ident) = relation.0.last().and_then(|part| part.as_ident()) {
            self.tables.insert(identifier(ident));
        }
        ControlFlow::Continue(())
    }
}

/// The name an identifier denotes (unquoted identifiers fold to lower case, as DataFusion's do).
fn identifier(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// What the object `name` of `kind` reads per its registered definition: existing tables and
/// objects only (a name the query uses that the warehouse does not have is not an input), sorted.
pub fn inputs_of(registry: &Registry, kind: &str, name: &str) -> Vec<String> {
    let Some(entry) = registry.object(kind, name) else {
        return Vec::new();
    };
    let named: Vec<String> = if kind == KIND_TRAINING_SET {
        match entry.decode::<TrainingSetDefinition>() {
            Ok(def) => std::iter::once(def.label)
                .chain(def.features.into_iter().map(|f| f.view))
                .collect(),
            Err(_) => Vec::new(),
        }
    } else {
        match entry.decode::<FeatureViewDefinition>() {
            Ok(def) => query_relations(&def.query),
            Err(_) => Vec::new(),
        }
    };
    let mut inputs: Vec<String> = named
        .into_iter()
        .filter(|n| n != name && kind_of(registry, n).is_some())
        .collect();
    inputs.sort();
    inputs.dedup();
    inputs
}

/// Every edge of the graph, sorted by object then input.
pub fn dependencies(registry: &Registry) -> Vec<Dependency> {
    let mut out = Vec::new();
    for kind in DERIVED_KINDS {
        for object in registry.objects(kind) {
            for input in inputs_of(registry, kind, &object.name) {
                let input_kind = kind_of(registry, &input).unwrap_or("table");
                out.push(Dependency {
                    object: object.name.clone(),
                    kind,
                    input,
                    input_kind,
                });
            }
        }
    }
    out.sort();
    out
}

/// `flywheel.dependencies`: object, kind, input, input_kind.
pub fn dependencies_batch(registry: &Registry) -> Result<RecordBatch> {
    let deps = dependencies(registry);
    let column = |f: &dyn Fn(&Dependency) -> &str| -> ArrayRef {
        Arc::new(deps.iter().map(|d| Some(f(d))).collect::<StringArray>())
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("object", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("input", DataType::Utf8, false),
        Field::new("input_kind", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            column(&|d| &d.object),
            column(&|d| d.kind),
            column(&|d| &d.input),
            column(&|d| d.input_kind),
        ],
    )?)
}

/// The objects `name` depends on, directly or through other objects, each after its own inputs
/// (tables are not listed: they are not refreshed); `name` itself is not in the list.
pub fn upstream(registry: &Registry, name: &str) -> Vec<(&'static str, String)> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let edges = edges(registry);
    visit(name, &edges, &mut seen, &mut order);
    order
        .into_iter()
        .filter(|n| n != name)
        .filter_map(|n| {
            kind_of(registry, &n)
                .filter(|k| *k != "table")
                .map(|k| (k, n))
        })
        .collect()
}

/// Every object of the warehouse, each after its inputs.
pub fn all_in_order(registry: &Registry) -> Vec<(&'static str, String)> {
    let edges = edges(registry);
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for kind in DERIVED_KINDS {
        for object in registry.objects(kind) {
            visit(&object.name, &edges, &mut seen, &mut order);
        }
    }
    order
        .into_iter()
        .filter_map(|n| {
            kind_of(registry, &n)
                .filter(|k| *k != "table")
                .map(|k| (k, n))
        })
        .collect()
}

fn edges(registry: &Registry) -> HashMap<String, Vec<String>> {
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for d in dependencies(registry) {
        edges.entry(d.object).or_default().push(d.input);
    }
    edges
}

/// Depth-first post-order from `name` (a name is listed after everything it reads). A cycle in a
/// registry written before cycles were refused is cut where it closes.
fn visit(
    name: &str,
    edges: &HashMap<String, Vec<String>>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(name.to_string()) {
        return;
    }
    for input in edges.get(name).into_iter().flatten() {
        visit(input, edges, seen, order);
    }
    order.push(name.to_string());
}

/// When `name` reading `inputs` would make it read itself, the cycle: `name`, the objects on the
/// way, and `name` again.
pub fn find_cycle(registry: &Registry, name: &str, inputs: &[String]) -> Option<Vec<String>> {
    let mut edges = edges(registry);
    edges.insert(name.to_string(), inputs.to_vec());
    let mut path = vec![name.to_string()];
    let mut seen = BTreeSet::new();
    fn walk(
        at: &str,
        target: &str,
        edges: &HashMap<String, Vec<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            path.push(next.clone());
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) && walk(next, target, edges, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    walk(name, name, &edges, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_the_tables_a_query_names_without_its_ctes() {
        assert_eq!(
            query_relations(
                "WITH recent AS (SELECT * FROM Events WHERE ts > 0) \
                 SELECT * FROM recent JOIN \"Users\" u ON true JOIN flywheel.public.orders o ON true"
            ),
            vec!["Users".to_string(), "events".into(), "orders".into()]
        );
        assert!(query_relations("not sql").is_empty());
    }
}
