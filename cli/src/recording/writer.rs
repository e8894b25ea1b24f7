//! Writing a record file: frames of encoded records, handed to the kernel
//! before the consumer commits them.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use memtrack::{Event, Record};

use super::codec::{Encoder, MAX_RECORD_BYTES};
use super::framing::{self, FRAME_HEADER_SIZE, SEAL_AT};
use super::{BLOCK_SIZE, Block, FILE_HEADER_SIZE, FileHeader};
use crate::output::Output;

/// Writes a record file; call [`RecordWriter::finish`] to complete it.
///
/// Entries are encoded into the current frame as they come; [`flush`]
/// seals the frame and hands it to the kernel, so what a caller flushed
/// before committing a batch of the ring is in complete frames.
///
/// A write that fails (a full file system, `/dev/full`, a FIFO whose
/// reader left) does not stop the recording: the writer remembers the
/// first error, keeps nothing more, and counts the ring records it could
/// not keep, so the caller can go on draining the ring and waiting for its
/// command, and report the loss at the end ([`RecordWriter::failure`]).
///
/// [`flush`]: RecordWriter::flush
pub struct RecordWriter {
    out: Output,
    encoder: Encoder,
    /// The open frame's payload and entry count, and the ring records in it.
    frame: Vec<u8>,
    frame_entries: u32,
    frame_records: u64,
    /// Sealed bytes not written yet (the header, then whole frames).
    pending: Vec<u8>,
    /// Per sealed frame in `pending`: where it ends, and its ring records.
    pending_frames: Vec<(usize, u64)>,
    /// Ring records left out because their event code is not one a ring
    /// carries: garbage a writer put in the ring. Kept, they would read
    /// back as reader blocks (a forged death or loss total) or as the end
    /// of the file.
    skipped: u64,
    failure: Option<OutputFailure>,
}

/// Why a record file stopped taking data, and what it could not keep.
#[derive(Debug)]
pub struct OutputFailure {
    /// The first write error.
    pub error: std::io::Error,
    /// Ring records not written from then on.
    pub records_not_kept: u64,
}

impl RecordWriter {
    /// Creates `path` safely (see [`crate::output`]) and writes the header.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path, header: &FileHeader) -> Result<RecordWriter> {
        Ok(RecordWriter::new(Output::create(path, &[])?, header))
    }

    /// Writes the header into `out`.
    pub fn new(out: Output, header: &FileHeader) -> RecordWriter {
        let mut pending = Vec::with_capacity(SEAL_AT + FRAME_HEADER_SIZE + FILE_HEADER_SIZE);
        pending.extend_from_slice(bytemuck::bytes_of(header));
        RecordWriter {
            out,
            encoder: Encoder::new(),
            frame: Vec::with_capacity(SEAL_AT + MAX_RECORD_BYTES.max(1 + BLOCK_SIZE)),
            frame_entries: 0,
            frame_records: 0,
            // The header holds no records.
            pending_frames: vec![(pending.len(), 0)],
            pending,
            skipped: 0,
            failure: None,
        }
    }

    /// The destination file.
    pub fn path(&self) -> &Path {
        self.out.path()
    }

    /// Why writing stopped, if it did.
    pub fn failure(&self) -> Option<&OutputFailure> {
        self.failure.as_ref()
    }

    /// Appends ring records.
    pub fn records(&mut self, records: &[Record]) {
        for record in records {
            if Event::from_code(record.event).is_none() {
                self.skipped += 1;
                continue;
            }
            if let Some(failure) = &mut self.failure {
                failure.records_not_kept += 1;
                continue;
            }
            self.encoder.record(record, &mut self.frame);
            self.frame_entries += 1;
            self.frame_records += 1;
            if self.frame.len() >= SEAL_AT {
                self.flush();
            }
        }
    }

    /// Appends one block.
    pub fn block(&mut self, block: Block) {
        if let Block::Record(record) = block {
            return self.records(&[record]);
        }
        if self.failure.is_some() {
            return;
        }
        self.encoder.block(block.code(), &block.to_bytes(), &mut self.frame);
        self.frame_entries += 1;
        if self.frame.len() >= SEAL_AT {
            self.flush();
        }
    }

    /// Seals the open frame and hands everything appended so far to the
    /// kernel (or, after a failure, counts it as not kept).
    pub fn flush(&mut self) {
        self.seal();
        if self.failure.is_some() {
            self.count_not_kept(0);
            return;
        }
        let mut written = 0;
        while written < self.pending.len() {
            match self.out.write(&self.pending[written..]) {
                Ok(0) => {
                    self.fail(std::io::Error::from(std::io::ErrorKind::WriteZero), written);
                    return;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(e, written);
                    return;
                }
            }
        }
        self.pending.clear();
        self.pending_frames.clear();
    }

    /// Writes the end marker and makes the file complete: synced, and
    /// renamed into place. Returns a line saying what it replaced, if
    /// anything.
    ///
    /// # Errors
    /// A write failed earlier or now (the incomplete file is put in place
    /// when it holds anything, see [`Output::keep_partial`]), or the file
    /// could not be synced or renamed.
    pub fn finish(mut self) -> Result<Option<String>> {
        if self.skipped > 0 {
            eprintln!(
                "memtrack: record file {}: left out {} ring records with an unknown event code (garbage written \
                 into the ring)",
                self.path().display(),
                self.skipped
            );
        }
        if self.failure.is_none() {
            self.encoder.end(&mut self.frame);
            self.frame_entries += 1;
        }
        self.flush();
        match self.failure.take() {
            None => self.out.commit(),
            Some(failure) => {
                let path = self.path().display().to_string();
                if let Some(note) = self.out.keep_partial() {
                    eprintln!("{note}");
                }
                bail!(
                    "memtrack: record file {path}: cannot write: {}; {} records not kept",
                    failure.error,
                    failure.records_not_kept
                )
            }
        }
    }

    /// Gives up the file: nothing appears at (or changes at) its path.
    pub fn discard(self) {
        self.out.discard();
    }

    /// Closes the open frame into `pending`.
    fn seal(&mut self) {
        if self.frame_entries == 0 {
            return;
        }
        self.pending.extend_from_slice(&framing::header_for(&self.frame, self.frame_entries));
        self.pending.extend_from_slice(&self.frame);
        self.pending_frames.push((self.pending.len(), self.frame_records));
        self.frame.clear();
        (self.frame_entries, self.frame_records) = (0, 0);
    }

    fn fail(&mut self, error: std::io::Error, written: usize) {
        self.failure = Some(OutputFailure { error, records_not_kept: 0 });
        self.count_not_kept(written);
    }

    /// Counts the ring records of the frames in `pending` that end after
    /// byte `written` (a frame cut short counts whole: a reader drops it)
    /// and drops the bytes.
    fn count_not_kept(&mut self, written: usize) {
        let records: u64 =
            self.pending_frames.iter().filter(|&&(end, _)| end > written).map(|&(_, records)| records).sum();
        if let Some(failure) = &mut self.failure {
            failure.records_not_kept += records + self.frame_records;
        }
        self.pending.clear();
        self.pending_frames.clear();
        self.frame.clear();
        (self.frame_entries, self.frame_records) = (0, 0);
    }
}
