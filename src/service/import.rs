//! Import: streams CSV or NDJSON rows from any reader into captures, a chunk of rows per write
//! job, with dedupe against the store and within the file, per-row rejections with their line
//! numbers, progress, and a dry run that reports what would happen without writing.
//! Re-importing a file creates nothing new: rows that match and add nothing leave no trace.

use super::capture::{Capture, Via, apply_capture, validate_with_visitor};
use super::{Service, ServiceError, ServiceResult};
use crate::domain::FieldError;
use crate::domain::lead::Lead;
use crate::domain::lead::{BadEmail, NewLead};
use crate::domain::user::Principal;
use crate::transfer::{Format, Mapping, Row, RowReader, TransferError};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use uuid::Uuid;

/// Rows per write job: big enough that a durable commit is amortized, small enough that other
/// requests interleave with a running import.
const CHUNK_ROWS: usize = 1000;
/// Chunks queued on the writer at once, so parsing, validation and writing overlap.
const CHUNKS_IN_FLIGHT: usize = 3;

/// What a dry run has seen of the file so far: each person its rows reach (a stored lead, or
/// one an earlier row would create) as those rows would leave it, found by email, phone,
/// exported id or content key. A later row is judged against that, as the import would.
#[derive(Default)]
struct FileSoFar {
    by_key: HashMap<String, usize>,
    people: Vec<Person>,
}

struct Person {
    lead: Lead,
    /// Made by a row of this file, not in the store.
    created: bool,
    /// Notes the file's rows left on it.
    notes: HashSet<String>,
    /// Conflicts the file's rows recorded on it.
    conflicts: HashSet<String>,
}

impl FileSoFar {
    fn add(&mut self, lead: Lead, created: bool) -> usize {
        self.people.push(Person {
            lead,
            created,
            notes: HashSet::new(),
            conflicts: HashSet::new(),
        });
        self.people.len() - 1
    }

    fn note(&mut self, person: usize, cap: &Capture) {
        if let Some(t) = &cap.text {
            self.people[person].notes.insert(t.clone());
        }
    }
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    Created(Uuid),
    /// Matched an existing lead (or an earlier row) and filled something in.
    Merged(Uuid),
    /// Matched and had nothing new: nothing was written.
    Unchanged(Uuid),
    Rejected(Vec<FieldError>),
}

/// A row the import did not take, with why.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub line: u64,
    pub errors: Vec<FieldError>,
    pub raw: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub rows: u64,
    pub created: u64,
    pub merged: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl ImportSummary {
    fn count(&mut self, o: &RowOutcome) {
        self.rows += 1;
        match o {
            RowOutcome::Created(_) => self.created += 1,
            RowOutcome::Merged(_) => self.merged += 1,
            RowOutcome::Unchanged(_) => self.unchanged += 1,
            RowOutcome::Rejected(_) => self.rejected += 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub format: Format,
    pub mapping: Mapping,
    pub dry_run: bool,
    /// Named on each row's activity (a file name, or `http`).
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input cannot be read as the format (no header, I/O failure): stopped there.
    #[error("{0}")]
    Input(#[from] TransferError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A row ready for the writer: its line, the raw values and the capture, or its problems.
struct Prepared {
    line: u64,
    raw: Map<String, Value>,
    item: Result<(NewLead, Capture), Vec<FieldError>>,
}

impl Service {
    fn prepare(&self, row: Row, origin: &str) -> Prepared {
        let Row {
            line,
            raw,
            note,
            id,
            input,
        } = row;
        let item = input
            .and_then(|input| {
                validate_with_visitor(input, |i| i.validate_with(&self.rules, BadEmail::Flag))
            })
            .map(|(mut new, visitor_id)| {
                let mut cap = Capture::new(Via::Import, "import", raw.clone());
                cap.text = note;
                cap.exported_id = id;
                // The tracker's page views of this person become its activities, as with
                // any other capture.
                cap.visitor_id = visitor_id;
                cap.properties.insert("file".into(), json!(origin));
                cap.properties.insert("line".into(), json!(line));
                self.prepare_capture(&mut new, &mut cap);
                (new, cap)
            });
        Prepared { line, raw, item }
    }

    /// Writes one chunk in one transaction, in file order.
    async fn import_chunk(
        &self,
        p: &Principal,
        rows: Vec<Prepared>,
    ) -> ServiceResult<Vec<(Prepared, RowOutcome)>> {
        let principal = p.clone();
        let plugins = self.plugins.clone();
        self.store
            .write(move |tx| {
                let mut out = Vec::with_capacity(rows.len());
                for mut row in rows {
                    let item = std::mem::replace(&mut row.item, Err(Vec::new()));
                    let outcome = match item {
                        Err(errors) => RowOutcome::Rejected(errors),
                        Ok((new, cap)) => {
                            match apply_capture(tx, &plugins, &principal, new, cap)? {
                                Ok(o) if !o.merged => RowOutcome::Created(o.lead.id),
                                Ok(o) if o.changed => RowOutcome::Merged(o.lead.id),
                                Ok(o) => RowOutcome::Unchanged(o.lead.id),
                                Err(ServiceError::Invalid(errors)) => RowOutcome::Rejected(errors),
                                Err(e) => RowOutcome::Rejected(vec![FieldError::new(
                                    "row",
                                    e.to_string(),
                                )]),
                            }
                        }
                    };
                    out.push((row, outcome));
                }
                Ok(out)
            })
            .await
            .map_err(ServiceError::from)
    }

    /// What writing a chunk would do, judged from a snapshot and the keys of earlier rows.
    fn dry_run_chunk(
        &self,
        p: &Principal,
        rows: Vec<Prepared>,
        file: &mut FileSoFar,
    ) -> ServiceResult<Vec<(Prepared, RowOutcome)>> {
        let snap = self.store.read()?;
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            let item = std::mem::replace(&mut row.item, Err(Vec::new()));
            let outcome = match item {
                Err(errors) => RowOutcome::Rejected(errors),
                Ok((mut new, cap)) => {
                    // Owners and pools as the import takes them: one that is not here is
                    // dropped, and naming someone the importer may not assign is refused.
                    if let Some(o) = new.owner_id
                        && !snap.user(o)?.is_some_and(|u| u.active)
                    {
                        new.owner_id = None;
                    }
                    if let Some(pool) = new.pool_id
                        && snap.pool(pool)?.is_none()
                    {
                        new.pool_id = None;
                    }
                    if let Err(e) = super::leads::check_owner_right(p, new.owner_id) {
                        out.push((
                            row,
                            RowOutcome::Rejected(vec![FieldError::new("row", e.to_string())]),
                        ));
                        continue;
                    }
                    let owner_defaulted = super::leads::owner_is_defaulted(p, &new);
                    let content = (new.email.is_none() && new.phone.is_none())
                        .then(|| super::capture::row_key(&new));
                    let exported = match (&content, cap.exported_id) {
                        (Some(_), Some(id)) => Some(format!("i:{id}")),
                        _ => None,
                    };
                    let keys: Vec<String> = new
                        .email
                        .iter()
                        .map(|e| format!("e:{e}"))
                        .chain(new.phone.iter().map(|p| format!("p:{p}")))
                        .chain(exported)
                        .chain(content)
                        .collect();
                    // An earlier row's person, else the stored lead a key finds.
                    let known = keys.iter().find_map(|k| file.by_key.get(k).copied());
                    let stored = match known {
                        Some(_) => None,
                        None => match stored_match(&snap, &keys)? {
                            Some(id) => snap.lead(id)?,
                            None => None,
                        },
                    };
                    let person = match (known, stored) {
                        (Some(i), _) => i,
                        // As the import would: a row may not touch a lead its importer cannot
                        // see.
                        (None, Some(lead)) if !p.can_see_lead(&lead) => {
                            out.push((
                                row,
                                RowOutcome::Rejected(vec![FieldError::new(
                                    "row",
                                    super::capture::ROW_OF_SOMEONE_ELSE,
                                )]),
                            ));
                            continue;
                        }
                        (None, Some(lead)) => file.add(lead, false),
                        (None, None) => {
                            let person = file.add(new.clone().into_lead(Uuid::nil(), 0), true);
                            file.note(person, &cap);
                            for k in keys {
                                file.by_key.insert(k, person);
                            }
                            out.push((row, RowOutcome::Created(Uuid::nil())));
                            continue;
                        }
                    };
                    for k in keys {
                        file.by_key.entry(k).or_insert(person);
                    }
                    // The row meets the person as the file's earlier rows left it.
                    let in_store = !file.people[person].created;
                    let lead = &mut file.people[person].lead;
                    let id = lead.id;
                    let before = lead.clone();
                    super::leads::keep_placement(p, lead, &mut new, owner_defaulted);
                    let report = lead.absorb(new);
                    let new_conflicts = !report.conflicts.is_empty() && {
                        let key = super::capture::conflicts_key(id, &report.conflicts);
                        let recorded = in_store && snap.alt_key(&key)?.is_some();
                        !recorded && file.people[person].conflicts.insert(key)
                    };
                    let new_note = match &cap.text {
                        Some(t) if file.people[person].notes.contains(t) => false,
                        Some(t) if in_store => {
                            !snap.has_activity_text(id, &cap.activity_kind, t)?
                        }
                        Some(_) => true,
                        None => false,
                    };
                    file.note(person, &cap);
                    match file.people[person].lead == before && !new_note && !new_conflicts {
                        true => RowOutcome::Unchanged(id),
                        false => RowOutcome::Merged(id),
                    }
                }
            };
            out.push((row, outcome));
        }
        Ok(out)
    }

    /// Imports everything `reader` holds. `progress` hears the summary so far and the bytes
    /// read after each chunk; `reject` hears each rejected row in file order. Rows committed
    /// before a failure stay, and running the import again picks up where it stopped.
    pub async fn import<R: Read + Send + 'static>(
        &self,
        p: &Principal,
        reader: R,
        opts: ImportOptions,
        mut progress: impl FnMut(&ImportSummary),
        mut reject: impl FnMut(&Rejection),
    ) -> Result<ImportSummary, ImportError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Prepared>, TransferError>>(4);
        let service = self.clone();
        let origin = opts.origin.clone();
        let (format, mapping) = (opts.format, opts.mapping.clone());
        // Parsing and normalizing (phones, emails) run on their own thread, beside the writer.
        let reading = tokio::task::spawn_blocking(move || {
            let rows = match RowReader::new(reader, format, mapping) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            for row in rows {
                match row {
                    Ok(row) => chunk.push(service.prepare(row, &origin)),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
                if chunk.len() == CHUNK_ROWS
                    && tx
                        .blocking_send(Ok(std::mem::replace(
                            &mut chunk,
                            Vec::with_capacity(CHUNK_ROWS),
                        )))
                        .is_err()
                {
                    return;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(chunk));
            }
        });

        let mut summary = ImportSummary::default();
        let mut file = FileSoFar::default();
        let mut in_flight = VecDeque::new();
        let mut finish = |done: Vec<(Prepared, RowOutcome)>, summary: &mut ImportSummary| {
            for (row, outcome) in done {
                summary.count(&outcome);
                if let RowOutcome::Rejected(errors) = outcome {
                    reject(&Rejection {
                        line: row.line,
                        errors,
                        raw: row.raw,
                    });
                }
            }
            progress(summary);
        };
        let mut failure = None;
        while let Some(chunk) = rx.recv().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(ImportError::Input(e));
                    break;
                }
            };
            if opts.dry_run {
                match self.dry_run_chunk(p, chunk, &mut file) {
                    Ok(done) => finish(done, &mut summary),
                    Err(e) => {
                        failure = Some(e.into());
                        break;
                    }
                }
                continue;
            }
            let service = self.clone();
            let principal = p.clone();
            in_flight.push_back(tokio::spawn(async move {
                service.import_chunk(&principal, chunk).await
            }));
            if in_flight.len() >= CHUNKS_IN_FLIGHT
                && let Some(oldest) = in_flight.pop_front()
            {
                match join(oldest).await {
                    Ok(done) => finish(done, &mut summary),
                    Err(e) => {
                        failure = Some(e.into());
                        break;
                    }
                }
            }
        }
        drop(rx);
        while let Some(pending) = in_flight.pop_front() {
            match join(pending).await {
                Ok(done) => finish(done, &mut summary),
                Err(e) => {
                    failure.get_or_insert(e.into());
                }
            }
        }
        let _ = reading.await;
        match failure {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

/// The stored lead one of a row's `keys` finds (email, phone, exported id or content), in
/// the order the keys come.
fn stored_match(snap: &crate::store::Snapshot, keys: &[String]) -> ServiceResult<Option<Uuid>> {
    for k in keys {
        let (kind, value) = k.split_at(2);
        let found = match kind {
            "e:" => snap.lead_id_by_email(value)?,
            "p:" => snap.lead_id_by_phone(value)?,
            "i:" => match Uuid::parse_str(value) {
                Ok(id) if snap.lead(id)?.is_some() => Some(id),
                Ok(id) => snap.alt_key(&format!("m:{id}"))?,
                Err(_) => None,
            },
            _ => snap.alt_key(k)?,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

async fn join(
    task: tokio::task::JoinHandle<ServiceResult<Vec<(Prepared, RowOutcome)>>>,
) -> ServiceResult<Vec<(Prepared, RowOutcome)>> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(ServiceError::Store(crate::store::StoreError::Storage(
            format!("an import chunk stopped: {e}"),
        ))),
    }
}
