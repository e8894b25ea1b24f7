//! Reading a record file back, frame by frame, checking each.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytemuck::Zeroable;
use memtrack::Event;

use super::codec::{Decoder, Entry};
use super::framing::{FRAME_HEADER_SIZE, FrameHeader};
use super::{BLOCK_SIZE, Block, EVENT_OFFSET, FILE_HEADER_SIZE, FileHeader, code};

/// Reads a record file block by block.
pub struct RecordReader {
    input: BufReader<File>,
    path: PathBuf,
    header: FileHeader,
    body: Body,
    ended: bool,
    unfinished_ok: bool,
    /// Blocks for which this says false are skipped (`export` filters).
    keep: Option<BlockFilter>,
}

/// How the blocks after the header are stored.
enum Body {
    /// Versions 1 and 2: 64-byte blocks.
    Blocks {
        /// Complete blocks not read yet.
        left: u64,
        read: u64,
    },
    /// Version 3: frames of encoded entries.
    Frames(FrameCursor),
}

/// Where a version 3 reader is.
struct FrameCursor {
    decoder: Decoder,
    /// The current frame's payload, the next entry's offset in it, and the
    /// entries not read yet.
    payload: Vec<u8>,
    at: usize,
    entries_left: u32,
    /// File bytes not read yet.
    bytes_left: u64,
    /// File offsets of the current frame and the next, and frames read.
    frame_offset: u64,
    next_offset: u64,
    frames: u64,
}

/// A predicate on blocks, see [`RecordReader::keep_only`].
pub type BlockFilter = Box<dyn FnMut(&Block) -> bool>;

impl RecordReader {
    /// Opens `path` and validates its header.
    pub fn open(path: &Path) -> Result<RecordReader> {
        RecordReader::open_with(path, false)
    }

    /// As [`RecordReader::open`], also accepting a recording that did not
    /// finish (its reader was killed): the complete blocks (frames, in a
    /// version 3 file) it holds are read; a partial last block or frame
    /// and the missing end block are not errors.
    pub fn open_unfinished(path: &Path) -> Result<RecordReader> {
        RecordReader::open_with(path, true)
    }

    fn open_with(path: &Path, unfinished_ok: bool) -> Result<RecordReader> {
        let context = || format!("memtrack: record file {}", path.display());
        let file = File::open(path).with_context(context)?;
        let metadata = file.metadata().with_context(context)?;
        // The reader needs the file's length (where the frames end, what a
        // cut-short one lacks): a pipe (`report /dev/stdin`, `<(ssh ...)`)
        // or a device has none, and read as 0 bytes would be "too short".
        if !metadata.is_file() && !metadata.is_dir() {
            bail!(
                "memtrack: record file {}: not a regular file (a pipe or a device); save the recording to a file \
                 and read that",
                path.display()
            );
        }
        let length = metadata.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut header = FileHeader::zeroed();
        if length < FILE_HEADER_SIZE as u64 {
            bail!("memtrack: record file {}: too short for a header ({length} bytes)", path.display());
        }
        input.read_exact(bytemuck::bytes_of_mut(&mut header)).with_context(context)?;
        header.validate(path)?;
        let body = length - FILE_HEADER_SIZE as u64;
        let body = if header.version >= 3 {
            Body::Frames(FrameCursor {
                decoder: Decoder::new(),
                payload: Vec::new(),
                at: 0,
                entries_left: 0,
                bytes_left: body,
                frame_offset: FILE_HEADER_SIZE as u64,
                next_offset: FILE_HEADER_SIZE as u64,
                frames: 0,
            })
        } else {
            if !unfinished_ok && !body.is_multiple_of(BLOCK_SIZE as u64) {
                bail!(
                    "memtrack: record file {}: truncated ({body} bytes after the header is not a whole number of \
                     64-byte blocks; `memtrack report --partial` reads what it holds)",
                    path.display(),
                );
            }
            Body::Blocks { left: body / BLOCK_SIZE as u64, read: 0 }
        };
        Ok(RecordReader {
            input,
            path: path.to_owned(),
            header,
            body,
            ended: false,
            unfinished_ok,
            keep: None,
        })
    }

    /// From now on, `next_block` skips the blocks `keep` says false for.
    pub fn keep_only(&mut self, keep: BlockFilter) {
        self.keep = Some(keep);
    }

    /// The file header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Whether the end block was read: the recording finished.
    pub fn finished(&self) -> bool {
        self.ended
    }

    /// The next block; `None` after the end block (or, for a reader from
    /// [`RecordReader::open_unfinished`], at the end of the complete blocks).
    ///
    /// # Errors
    /// A read error, an unknown block, a corrupt frame, data after the end
    /// block, or a file that stops without one (its reader did not finish).
    pub fn next_block(&mut self) -> Result<Option<Block>> {
        self.next_block_or_left_out(|_| {})
    }

    /// As [`RecordReader::next_block`], handing each block the filter of
    /// [`RecordReader::keep_only`] leaves out to `left_out` first: a state
    /// engine that shows only the kept blocks still follows processes
    /// through the others (`Engine::follow_owner`).
    ///
    /// # Errors
    /// As [`RecordReader::next_block`].
    pub fn next_block_or_left_out(&mut self, mut left_out: impl FnMut(&Block)) -> Result<Option<Block>> {
        loop {
            let block = match self.body {
                Body::Blocks { .. } => self.next_fixed()?,
                Body::Frames(_) => self.next_framed()?,
            };
            let kept = match (&block, &mut self.keep) {
                (Some(b), Some(keep)) => keep(b),
                _ => true,
            };
            if kept {
                return Ok(block);
            }
            if let Some(block) = &block {
                left_out(block);
            }
        }
    }

    /// The next block of a version 1 or 2 file.
    fn next_fixed(&mut self) -> Result<Option<Block>> {
        let Body::Blocks { left, read } = &mut self.body else { unreachable!("a fixed-block body") };
        if *left == 0 {
            if self.ended || self.unfinished_ok {
                return Ok(None);
            }
            bail!(
                "memtrack: record file {}: truncated after {} blocks (no end block: the recording did not \
                 finish; `memtrack report --partial` reads what it holds)",
                self.path.display(),
                read
            );
        }
        let mut bytes = [0u8; BLOCK_SIZE];
        self.input
            .read_exact(&mut bytes)
            .with_context(|| format!("memtrack: record file {}", self.path.display()))?;
        *left -= 1;
        if self.ended {
            bail!("memtrack: record file {}: data after the end block", self.path.display());
        }
        *read += 1;
        if bytes[EVENT_OFFSET] == code::END {
            self.ended = true;
            return self.next_fixed();
        }
        match Block::parse(&bytes) {
            Some(block) => Ok(Some(block)),
            None => bail!(
                "memtrack: record file {}: corrupt block {} (unknown event code {:#x})",
                self.path.display(),
                *read - 1,
                bytes[EVENT_OFFSET]
            ),
        }
    }

    /// The next block of a version 3 file.
    fn next_framed(&mut self) -> Result<Option<Block>> {
        let path = self.path.display();
        let Body::Frames(cursor) = &mut self.body else { unreachable!("a framed body") };
        if cursor.entries_left == 0 {
            if cursor.at != cursor.payload.len() {
                bail!(
                    "memtrack: record file {path}: corrupt frame {} at byte {} ({} bytes after its last entry)",
                    cursor.frames - 1,
                    cursor.frame_offset,
                    cursor.payload.len() - cursor.at
                );
            }
            if cursor.bytes_left == 0 {
                if self.ended || self.unfinished_ok {
                    return Ok(None);
                }
                bail!(
                    "memtrack: record file {path}: truncated after {} frames (no end block: the recording did \
                     not finish; `memtrack report --partial` reads what it holds)",
                    cursor.frames
                );
            }
            if self.ended {
                bail!("memtrack: record file {path}: data after the end block");
            }
            if !cursor.next_frame(&mut self.input, &path.to_string(), self.unfinished_ok)? {
                // A frame cut short ends what `--partial` reads: nothing
                // after it is a frame header, so later calls say "no more"
                // instead of parsing the cut payload as the next frame.
                cursor.bytes_left = 0;
                return Ok(None);
            }
        }
        let frame = cursor.frames - 1;
        let entry = cursor.decoder.entry(&cursor.payload, &mut cursor.at).map_err(|e| {
            anyhow::anyhow!(
                "memtrack: record file {path}: corrupt frame {frame} at byte {} ({e})",
                cursor.frame_offset
            )
        })?;
        cursor.entries_left -= 1;
        let block = match entry {
            Entry::Record(record) => match Event::from_code(record.event) {
                Some(_) => Block::Record(record),
                None => bail!(
                    "memtrack: record file {path}: corrupt frame {frame} at byte {} (unknown event code {:#x})",
                    cursor.frame_offset,
                    record.event
                ),
            },
            Entry::Block(code, bytes) => match Block::parse(&bytes).filter(|_| bytes[EVENT_OFFSET] == code) {
                Some(block) => block,
                None => bail!(
                    "memtrack: record file {path}: corrupt frame {frame} at byte {} (unknown event code {code:#x})",
                    cursor.frame_offset
                ),
            },
            Entry::End => {
                self.ended = true;
                if cursor.entries_left != 0 || cursor.at != cursor.payload.len() || cursor.bytes_left != 0 {
                    bail!("memtrack: record file {path}: data after the end block");
                }
                return Ok(None);
            }
        };
        Ok(Some(block))
    }
}

impl FrameCursor {
    /// Reads the next frame and checks it. `Ok(false)`: the file ends in a
    /// frame cut short and `unfinished_ok` accepts that.
    fn next_frame(&mut self, input: &mut BufReader<File>, path: &str, unfinished_ok: bool) -> Result<bool> {
        let offset = self.next_offset;
        let torn = |have: u64, need: u64| -> Result<bool> {
            if unfinished_ok {
                return Ok(false);
            }
            // A recorder killed inside a `write` leaves this, as one killed
            // between frames leaves no end block: say the same.
            bail!(
                "memtrack: record file {path}: truncated (the frame at byte {offset} is cut short: {have} of its \
                 {need} bytes: the recording did not finish, or the file was cut; `memtrack report --partial` \
                 reads what it holds)"
            )
        };
        if self.bytes_left < FRAME_HEADER_SIZE as u64 {
            return torn(self.bytes_left, FRAME_HEADER_SIZE as u64);
        }
        let mut header = [0u8; FRAME_HEADER_SIZE];
        input.read_exact(&mut header).with_context(|| format!("memtrack: record file {path}"))?;
        let frame = FrameHeader::parse(&header).map_err(|e| {
            anyhow::anyhow!(
                "memtrack: record file {path}: corrupt frame {} at byte {offset} ({e})",
                self.frames
            )
        })?;
        let need = FRAME_HEADER_SIZE as u64 + frame.length as u64;
        if self.bytes_left < need {
            return torn(self.bytes_left, need);
        }
        self.payload.resize(frame.length as usize, 0);
        input.read_exact(&mut self.payload).with_context(|| format!("memtrack: record file {path}"))?;
        frame.check(&self.payload).map_err(|e| {
            anyhow::anyhow!(
                "memtrack: record file {path}: corrupt frame {} at byte {offset} ({e})",
                self.frames
            )
        })?;
        self.bytes_left -= need;
        (self.frame_offset, self.next_offset) = (offset, offset + need);
        self.frames += 1;
        self.at = 0;
        self.entries_left = frame.entries;
        Ok(true)
    }
}
