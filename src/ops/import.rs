//! `crmsearch import FILE`: contacts from a CSV (with a header) or NDJSON
//! file, upserted by `external_id` in chunks (each one COPY transaction),
//! parsed on every core, with a progress bar, a report of bad lines (line
//! number, code, reason) and a state file that lets an interrupted import
//! resume after the last committed chunk.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::anyhow_of;
use crate::ingest::{self, Format, Parsed};
use crate::store::contacts::{self, LineError};

/// Lines per transaction.
pub const CHUNK_LINES: usize = 50_000;
/// Lines per parsing task.
const PART_LINES: usize = 2_500;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub file: PathBuf,
    pub tenant: Uuid,
    /// From the extension (`.csv`, else NDJSON) when not given.
    pub format: Option<Format>,
    /// Column (CSV) or key (NDJSON) renames: `from` → `to`.
    pub map: Vec<(String, String)>,
    /// Where bad lines go (default: `FILE.bad-lines.ndjson`).
    pub report: Option<PathBuf>,
    /// Ignore a saved state and start from the first line.
    pub restart: bool,
    pub chunk_lines: usize,
    pub quiet: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImportOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub failed: u64,
    /// Lines read (data lines; a CSV header is not counted).
    pub lines: u64,
    /// The line this run started after (0: from the beginning).
    pub resumed_after_line: u64,
    pub report: PathBuf,
    pub secs: f64,
}

/// What a state file holds: enough to continue the same file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    tenant: Uuid,
    size: u64,
    modified: u64,
    /// Byte offset after the last committed chunk.
    offset: u64,
    /// Physical lines consumed up to `offset` (header included).
    line: u64,
    inserted: u64,
    updated: u64,
    failed: u64,
    lines: u64,
}

fn state_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".import-state");
    p.into()
}

/// Parses `--map a=b,c=d`.
pub fn parse_map(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => Ok((a.trim().to_owned(), b.trim().to_owned())),
            _ => bail!("--map takes FROM=TO pairs separated by commas, like `Email=emails,Surname=last_name`; got `{p}`"),
        })
        .collect()
}

/// A chunk of physical lines and the file line of its first one.
struct Chunk {
    first_line: u64,
    lines: Vec<Vec<u8>>,
    end_offset: u64,
}

/// Reads up to `n` lines from `reader`; for CSV never stops inside a quoted
/// field (a field may span lines).
fn read_chunk(
    reader: &mut impl BufRead,
    n: usize,
    csv: bool,
    first_line: u64,
    offset: &mut u64,
) -> Result<Chunk> {
    let mut lines = Vec::with_capacity(n.min(1 << 16));
    let mut in_quotes = false;
    loop {
        if lines.len() >= n && !in_quotes {
            break;
        }
        let mut line = Vec::new();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        *offset += read as u64;
        if csv && line.iter().filter(|b| **b == b'"').count() % 2 == 1 {
            in_quotes = !in_quotes;
        }
        lines.push(line);
    }
    Ok(Chunk {
        first_line,
        lines,
        end_offset: *offset,
    })
}

/// Renames JSON keys of one NDJSON line (a line that is not an object is
/// left for the parser to report).
fn map_json_line(line: &[u8], map: &[(String, String)]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) {
        Ok(mut obj) => {
            for (from, to) in map {
                if let Some(v) = obj.remove(from) {
                    obj.insert(to.clone(), v);
                }
            }
            let mut out = serde_json::to_vec(&obj).unwrap_or_else(|_| line.to_vec());
            out.push(b'\n');
            out
        }
        Err(_) => line.to_vec(),
    }
}

/// Parses a chunk on the rayon pool, parts of [`PART_LINES`], then
/// validates it all grouped by country ([`ingest::validate`]); line numbers
/// are the file's.
fn parse_chunk(
    format: Format,
    header: &[u8],
    chunk: &Chunk,
    map: &[(String, String)],
) -> Result<Parsed> {
    let parts: Vec<(u64, &[Vec<u8>])> = chunk
        .lines
        .chunks(PART_LINES)
        .enumerate()
        .map(|(i, p)| (chunk.first_line + (i * PART_LINES) as u64, p))
        .collect();
    let read: Vec<ingest::Fields> = parts
        .par_iter()
        .map(|(first, lines)| -> Result<ingest::Fields> {
            let mut body =
                Vec::with_capacity(lines.iter().map(Vec::len).sum::<usize>() + header.len());
            body.extend_from_slice(header);
            for l in *lines {
                if format == Format::Ndjson && !map.is_empty() {
                    body.extend(map_json_line(l, map));
                } else {
                    body.extend_from_slice(l);
                    if !l.ends_with(b"\n") {
                        body.push(b'\n');
                    }
                }
            }
            let (mut good, mut bad) = ingest::read(format, &body).map_err(anyhow_of)?;
            // the parser numbers lines from 1 within `body` (a CSV header is line 1)
            let shift = first - if format == Format::Csv { 2 } else { 1 };
            for (n, _) in &mut good {
                *n += shift;
            }
            for b in &mut bad {
                b.line += shift;
            }
            Ok((good, bad))
        })
        .collect::<Result<_>>()?;
    let mut fields = Vec::new();
    let mut bad = Vec::new();
    for (g, b) in read {
        fields.extend(g);
        bad.extend(b);
    }
    Ok(ingest::validate(fields, bad))
}

fn file_stamp(file: &Path) -> Result<(u64, u64)> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok((meta.len(), modified))
}

fn save_state(path: &Path, s: &State) -> Result<()> {
    let tmp = path.with_extension("import-state.tmp");
    std::fs::write(&tmp, serde_json::to_vec(s)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub async fn run(pool: &PgPool, o: &ImportOptions) -> Result<ImportOutcome> {
    let started = Instant::now();
    let format = o.format.unwrap_or_else(|| {
        match o
            .file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Format::Csv,
            _ => Format::Ndjson,
        }
    });
    let csv = format == Format::Csv;
    let (size, modified) = file_stamp(&o.file)?;
    let state_file = state_path(&o.file);
    let report_path = o.report.clone().unwrap_or_else(|| {
        let mut p = o.file.as_os_str().to_owned();
        p.push(".bad-lines.ndjson");
        p.into()
    });
    let saved: Option<State> = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &State| {
            !o.restart && s.tenant == o.tenant && s.size == size && s.modified == modified
        });
    let mut file = std::fs::File::open(&o.file)
        .with_context(|| format!("cannot open {}", o.file.display()))?;
    // the CSV header, with the renames of --map
    let mut header = Vec::new();
    let mut offset = 0u64;
    if csv {
        let mut r = BufReader::new(&mut file);
        offset = r.read_until(b'\n', &mut header)? as u64;
        if header.is_empty() {
            bail!(
                "{} is empty: a CSV import needs a header row",
                o.file.display()
            );
        }
        if !o.map.is_empty() {
            let text = String::from_utf8_lossy(&header).into_owned();
            let names: Vec<String> = text
                .trim_end_matches(['\r', '\n'])
                .split(',')
                .map(|h| {
                    let h = h.trim().trim_matches('"');
                    o.map
                        .iter()
                        .find(|(from, _)| from == h)
                        .map_or(h.to_owned(), |(_, to)| to.clone())
                })
                .collect();
            header = format!("{}\n", names.join(",")).into_bytes();
        }
    }
    let mut state = match saved {
        Some(s) => {
            tracing::info!(
                line = s.line,
                offset = s.offset,
                "resuming the import after its last committed chunk"
            );
            s
        }
        None => {
            std::fs::File::create(&report_path)
                .with_context(|| format!("cannot write {}", report_path.display()))?;
            State {
                tenant: o.tenant,
                size,
                modified,
                offset,
                line: u64::from(csv),
                inserted: 0,
                updated: 0,
                failed: 0,
                lines: 0,
            }
        }
    };
    let resumed_after_line = if state.offset > offset { state.line } else { 0 };
    file.seek(SeekFrom::Start(state.offset))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut report = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&report_path)?;
    let pb = super::bar(size, "bytes", o.quiet);
    pb.set_position(state.offset);
    let mut offset = state.offset;
    loop {
        let chunk = read_chunk(
            &mut reader,
            o.chunk_lines.max(1),
            csv,
            state.line + 1,
            &mut offset,
        )?;
        if chunk.lines.is_empty() {
            break;
        }
        let n_lines = chunk.lines.len() as u64;
        let (h, m) = (header.clone(), o.map.clone());
        let (chunk, (good, bad)) =
            tokio::task::spawn_blocking(move || -> Result<(Chunk, Parsed)> {
                let parsed = parse_chunk(format, &h, &chunk, &m)?;
                Ok((chunk, parsed))
            })
            .await??;
        let out = contacts::bulk_upsert(pool, o.tenant, good, bad)
            .await
            .map_err(anyhow_of)?;
        write_report(&mut report, &out.failed)?;
        state.offset = chunk.end_offset;
        state.line += n_lines;
        state.lines += n_lines
            - chunk
                .lines
                .iter()
                .filter(|l| l.iter().all(u8::is_ascii_whitespace))
                .count() as u64;
        state.inserted += out.inserted;
        state.updated += out.updated;
        state.failed += out.failed.len() as u64;
        save_state(&state_file, &state)?;
        pb.set_position(state.offset);
        pb.set_message(format!("{} bad", state.failed));
    }
    pb.finish();
    report.flush()?;
    // done: a new import of this file starts over
    let _ = std::fs::remove_file(&state_file);
    Ok(ImportOutcome {
        inserted: state.inserted,
        updated: state.updated,
        failed: state.failed,
        lines: state.lines,
        resumed_after_line,
        report: report_path,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn write_report(w: &mut impl Write, failed: &[LineError]) -> Result<()> {
    for f in failed {
        serde_json::to_writer(&mut *w, f)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}
