//! Container events without polling: each container's monitor (and the engine, for
//! creations) replaces `events/ID.KIND` whole at every change, and removal deletes
//! them; an inotify watch on that one directory hears every change as it happens, its
//! kind in the file's name. The
//! stream is CRI's GetContainerEvents; waits for a container to end use it too, with a
//! pidfd on the init for a container whose monitor is gone.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::inotify;

use berth_monitor::supervise::{EventKind, EventRecord};

use crate::cri::{ContainerEvent, ContainerEventKind};
use crate::error::{Context, Result};

/// A stream of container events from an events directory.
pub struct EventStream {
    fd: OwnedFd,
    dir: PathBuf,
    /// Sandbox of each container seen, for the deletion events (the record is gone).
    sandboxes: HashMap<String, String>,
    pending: std::collections::VecDeque<ContainerEvent>,
}

fn convert(r: EventRecord) -> ContainerEvent {
    ContainerEvent {
        container_id: r.container_id,
        sandbox_id: r.sandbox_id,
        kind: match r.kind {
            EventKind::Created => ContainerEventKind::Created,
            EventKind::Started => ContainerEventKind::Started,
            EventKind::Stopped => ContainerEventKind::Stopped,
        },
        at: r.at,
    }
}

impl EventStream {
    /// Watches `dir` from now on.
    pub fn open(dir: &Path) -> Result<EventStream> {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .ctx(|| "inotify_init")?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::DELETE,
        )
        .ctx(|| format!("watch {}", dir.display()))?;
        let mut sandboxes = HashMap::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Ok(Some(r)) = berth_monitor::record::read_json::<EventRecord>(&e.path()) {
                    sandboxes.insert(r.container_id, r.sandbox_id);
                }
            }
        }
        Ok(EventStream {
            fd,
            dir: dir.to_path_buf(),
            sandboxes,
            pending: Default::default(),
        })
    }

    /// The next event, waiting up to `timeout` (None: for ever); None on timeout.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<ContainerEvent>> {
        let end = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            if !wait_readable(&self.fd, &[], left) {
                continue;
            }
            self.read_events();
        }
    }

    fn read_events(&mut self) {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let mut names: Vec<(String, bool)> = Vec::new();
        {
            let mut reader = inotify::Reader::new(&self.fd, &mut buf);
            while let Ok(ev) = reader.next() {
                let Some(name) = ev.file_name().and_then(|n| n.to_str().ok()) else {
                    continue;
                };
                if name.ends_with(".tmp") || name.starts_with('.') {
                    continue;
                }
                let deleted = ev.events().contains(inotify::ReadFlags::DELETE);
                names.push((name.to_string(), deleted));
            }
        }
        for (name, deleted) in names {
            let Some((id, kind)) = name
                .rsplit_once('.')
                .and_then(|(id, w)| Some((id.to_string(), EventKind::from_word(w)?)))
            else {
                continue;
            };
            if deleted {
                // One deletion event for the container's files going.
                if let Some(sandbox_id) = self.sandboxes.remove(&id) {
                    self.pending.push_back(ContainerEvent {
                        container_id: id,
                        sandbox_id,
                        kind: ContainerEventKind::Deleted,
                        at: berth_monitor::supervise::now_nanos(),
                    });
                }
                continue;
            }
            // The file may be replaced already by a later event of the same kind: the
            // kind is the name's, the rest the newest record's.
            let rec = berth_monitor::record::read_json::<EventRecord>(&self.dir.join(&name))
                .ok()
                .flatten();
            let sandbox_id = rec
                .as_ref()
                .map(|r| r.sandbox_id.clone())
                .or_else(|| self.sandboxes.get(&id).cloned())
                .unwrap_or_default();
            self.sandboxes.insert(id.clone(), sandbox_id.clone());
            self.pending.push_back(convert(EventRecord {
                container_id: id,
                sandbox_id,
                kind,
                at: rec.map_or_else(berth_monitor::supervise::now_nanos, |r| r.at),
            }));
        }
    }

    /// Reads what has arrived without waiting (the events queue up for
    /// [`Self::next_event`]).
    pub fn drain(&mut self) {
        self.read_events();
    }

    /// The inotify descriptor (to poll together with others).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Iterator for EventStream {
    type Item = Result<ContainerEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event(None).transpose()
    }
}

/// Waits until `fd` (or one of `also`) is readable or `timeout` passes; true if one is.
pub(crate) fn wait_readable(fd: &OwnedFd, also: &[OwnedFd], timeout: Option<Duration>) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = timeout.map(|t| Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    let mut fds = vec![PollFd::new(fd, PollFlags::IN)];
    for a in also {
        fds.push(PollFd::new(a, PollFlags::IN));
    }
    matches!(poll(&mut fds, ts.as_ref()), Ok(n) if n > 0)
}
