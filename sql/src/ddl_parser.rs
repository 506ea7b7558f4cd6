//! Parses Flywheel's statements by peeking at the leading words; anything else is left to
//! DataFusion's parser.

use sqlparser::ast::Ident;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

use crate::ast::{
    AlterAction, CreateEntity, CreateFeatureView, CreateLabel, CreateMode, CreateTrainingSet,
    FeatureRef, FlywheelDdl, KeyColumn, LabelSource, ObjectKind, SqlOption,
};

type PResult<T> = Result<T, ParserError>;

/// The unquoted word `n` tokens ahead, upper-cased.
fn word(p: &Parser, n: usize) -> Option<String> {
    match p.peek_nth_token(n).token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// The object kind named `n` tokens ahead (singular or plural) and how many tokens it takes.
fn kind_at(p: &Parser, n: usize, plural: bool) -> Option<(ObjectKind, usize)> {
    let first = word(p, n)?;
    let second = word(p, n + 1);
    let (entity, label, view, set) = if plural {
        ("ENTITIES", "LABELS", "VIEWS", "SETS")
    } else {
        ("ENTITY", "LABEL", "VIEW", "SET")
    };
    match first.as_str() {
        w if w == entity => Some((ObjectKind::Entity, 1)),
        w if w == label => Some((ObjectKind::Label, 1)),
        "FEATURE" if second.as_deref() == Some(view) => Some((ObjectKind::FeatureView, 2)),
        "TRAINING" if second.as_deref() == Some(set) => Some((ObjectKind::TrainingSet, 2)),
        _ => None,
    }
}

fn skip(p: &mut Parser, n: usize) {
    for _ in 0..n {
        p.next_token();
    }
}

fn expect_word(p: &mut Parser, expected: &str) -> PResult<()> {
    if word(p, 0).as_deref() == Some(expected) {
        p.next_token();
        Ok(())
    } else {
        p.expected(expected, p.peek_token())
    }
}

fn parse_word(p: &mut Parser, expected: &str) -> bool {
    if word(p, 0).as_deref() == Some(expected) {
        p.next_token();
        true
    } else {
        false
    }
}

/// `(key = value, ...)`.
fn parse_options(p: &mut Parser) -> PResult<Vec<SqlOption>> {
    p.expect_token(&Token::LParen)?;
    let options = p.parse_comma_separated(|p| {
        let key = p.parse_identifier()?;
        p.expect_token(&Token::Eq)?;
        Ok(SqlOption {
            key,
            value: p.parse_expr()?,
        })
    })?;
    p.expect_token(&Token::RParen)?;
    Ok(options)
}

/// `WITH (key = value, ...)`, if present.
fn parse_with(p: &mut Parser) -> PResult<Vec<SqlOption>> {
    if p.parse_keyword(Keyword::WITH) {
        parse_options(p)
    } else {
        Ok(Vec::new())
    }
}

/// Parses a Flywheel statement at the current position, or returns `None` (consuming nothing) when
/// the statement is not one of Flywheel's.
pub(crate) fn try_parse(p: &mut Parser) -> PResult<Option<FlywheelDdl>> {
    let Some(first) = word(p, 0) else {
        return Ok(None);
    };
    match first.as_str() {
        "CREATE" => {
            let or_replace =
                word(p, 1).as_deref() == Some("OR") && word(p, 2).as_deref() == Some("REPLACE");
            let at = if or_replace { 3 } else { 1 };
            let Some((kind, len)) = kind_at(p, at, false) else {
                return Ok(None);
            };
            skip(p, at + len);
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let mode = CreateMode {
                or_replace,
                if_not_exists,
            };
            let name = p.parse_identifier()?;
            Ok(Some(match kind {
                ObjectKind::Entity => parse_entity(p, name, mode)?,
                ObjectKind::FeatureView => parse_feature_view(p, name, mode)?,
                ObjectKind::Label => parse_label(p, name, mode)?,
                ObjectKind::TrainingSet => parse_training_set(p, name, mode)?,
            }))
        }
        "ALTER" => {
            let Some((kind, len)) = kind_at(p, 1, false) else {
                return Ok(None);
            };
            if kind == ObjectKind::Entity {
                return Ok(None);
            }
            skip(p, 1 + len);
            let name = p.parse_identifier()?;
            let action = if parse_word(p, "SUSPEND") {
                AlterAction::Suspend
            } else if parse_word(p, "RESUME") {
                AlterAction::Resume
            } else if p.parse_keyword(Keyword::SET) {
                AlterAction::Set(parse_options(p)?)
            } else {
                return p.expected("SET (...), SUSPEND or RESUME", p.peek_token());
            };
            Ok(Some(FlywheelDdl::Alter { kind, name, action }))
        }
        "REFRESH" => {
            if word(p, 1).as_deref() == Some("ALL") {
                skip(p, 2);
                let full = parse_word(p, "FULL");
                return Ok(Some(FlywheelDdl::RefreshAll { full }));
            }
            let Some((kind, len)) = kind_at(p, 1, false) else {
                return Ok(None);
            };
            if kind == ObjectKind::Entity {
                return Err(ParserError::ParserError(format!(
                    "REFRESH applies to FEATURE VIEW, LABEL and TRAINING SET (or ALL), not {kind}"
                )));
            }
            skip(p, 1 + len);
            let name = p.parse_identifier()?;
            // `ONLY` and `FULL`, in either order.
            let mut only = parse_word(p, "ONLY");
            let full = parse_word(p, "FULL");
            only |= parse_word(p, "ONLY");
            Ok(Some(FlywheelDdl::Refresh {
                kind,
                name,
                only,
                full,
            }))
        }
        "SHOW" => {
            let Some((kind, len)) = kind_at(p, 1, true) else {
                return Ok(None);
            };
            skip(p, 1 + len);
            Ok(Some(FlywheelDdl::Show { kind }))
        }
        "DESCRIBE" | "DESC" => {
            let Some((kind, len)) = kind_at(p, 1, false) else {
                return Ok(None);
            };
            skip(p, 1 + len);
            Ok(Some(FlywheelDdl::Describe {
                kind,
                name: p.parse_identifier()?,
            }))
        }
        "DROP" => {
            let Some((kind, len)) = kind_at(p, 1, false) else {
                return Ok(None);
            };
            skip(p, 1 + len);
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = p.parse_identifier()?;
            let cascade = p.parse_keyword(Keyword::CASCADE);
            if !cascade {
                let _ = p.parse_keyword(Keyword::RESTRICT);
            }
            Ok(Some(FlywheelDdl::Drop {
                kind,
                name,
                if_exists,
                cascade,
            }))
        }
        _ => Ok(None),
    }
}

fn parse_entity(p: &mut Parser, name: Ident, mode: CreateMode) -> PResult<FlywheelDdl> {
    p.expect_token(&Token::LParen)?;
    let keys = p.parse_comma_separated(|p| {
        Ok(KeyColumn {
            name: p.parse_identifier()?,
            data_type: p.parse_data_type()?,
        })
    })?;
    p.expect_token(&Token::RParen)?;
    Ok(FlywheelDdl::CreateEntity(CreateEntity { name, mode, keys }))
}

fn parse_entity_and_time(p: &mut Parser) -> PResult<(Ident, Ident)> {
    expect_word(p, "ENTITY")?;
    let entity = p.parse_identifier()?;
    expect_word(p, "EVENT")?;
    expect_word(p, "TIME")?;
    Ok((entity, p.parse_identifier()?))
}

fn parse_feature_view(p: &mut Parser, name: Ident, mode: CreateMode) -> PResult<FlywheelDdl> {
    let (entity, event_time) = parse_entity_and_time(p)?;
    let ttl = if parse_word(p, "TTL") {
        Some(p.parse_expr()?)
    } else {
        None
    };
    let options = parse_with(p)?;
    p.expect_keyword(Keyword::AS)?;
    let query = p.parse_query()?;
    Ok(FlywheelDdl::CreateFeatureView(Box::new(
        CreateFeatureView {
            name,
            mode,
            entity,
            event_time,
            ttl,
            options,
            query,
        },
    )))
}

fn parse_label(p: &mut Parser, name: Ident, mode: CreateMode) -> PResult<FlywheelDdl> {
    let (entity, event_time) = parse_entity_and_time(p)?;
    let options = parse_with(p)?;
    p.expect_keyword(Keyword::FROM)?;
    let source = if p.consume_token(&Token::LParen) {
        let q = p.parse_query()?;
        p.expect_token(&Token::RParen)?;
        LabelSource::Query(q)
    } else {
        LabelSource::Table(p.parse_object_name(false)?)
    };
    Ok(FlywheelDdl::CreateLabel(Box::new(CreateLabel {
        name,
        mode,
        entity,
        event_time,
        options,
        source,
    })))
}

fn parse_training_set(p: &mut Parser, name: Ident, mode: CreateMode) -> PResult<FlywheelDdl> {
    expect_word(p, "LABEL")?;
    let label = p.parse_identifier()?;
    expect_word(p, "FEATURES")?;
    let features = p.parse_comma_separated(|p| {
        let view = p.parse_identifier()?;
        let column = if p.consume_token(&Token::Period) {
            Some(p.parse_identifier()?)
        } else {
            None
        };
        Ok(FeatureRef { view, column })
    })?;
    let options = parse_with(p)?;
    Ok(FlywheelDdl::CreateTrainingSet(CreateTrainingSet {
        name,
        mode,
        label,
        features,
        options,
    }))
}
