//! The protocol between the driver and the agent inside a persistent sandbox (`agent.rs`,
//! `persistent.rs`): frames of a 4-byte little-endian length, then the body, whose first byte
//! is the message's tag. They travel over a Unix stream socket; the descriptors of a command's
//! stdio ride on the `Exec` frame as `SCM_RIGHTS`.
//!
//! Both sides treat what they read as untrusted: the agent shares its sandbox with the
//! commands it starts, so the driver decodes every frame with bounds checks and acts on
//! nothing but what it can verify from the host (see `persistent.rs`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The largest frame either side accepts (a command line, its environment and its arguments).
pub const MAX_FRAME: usize = 16 << 20;

/// At most this many descriptors ride on one frame (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// A command for the agent to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Exec {
    pub argv: Vec<Vec<u8>>,
    /// `KEY=VALUE` entries: the command's whole environment.
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub rlimits: WireRlimits,
    /// Whether the first descriptor of the frame is the command's stdin (else /dev/null).
    pub stdin: bool,
}

/// [`super::process::Rlimits`] on the wire (`0` for an absent optional limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireRlimits {
    pub cpu_seconds: u64,
    pub address_space_bytes: u64,
    pub processes: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
}

/// What the driver sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ToAgent {
    Exec(Exec),
    /// The command was placed (in its cgroup): let it run.
    Go,
    /// The command could not be placed: kill it unstarted.
    Abort,
    /// The command's tree is gone: reap its leader.
    Reap,
}

/// What the agent sends.
#[derive(Clone, Debug, PartialEq)]
pub enum FromAgent {
    /// The agent runs, with this pid in the sandbox's pid namespace.
    Hello {
        pid: u32,
    },
    /// The command's process exists (stopped before `execve`) with this pid in the sandbox.
    Spawned {
        pid: u32,
    },
    /// The command called `execve`.
    Started,
    /// The command could not start: which step failed and its errno.
    Failed {
        step: u32,
        errno: i32,
    },
    /// The command's process ended (it stays unreaped until `Reap`).
    Exited {
        signal: bool,
        value: i32,
    },
    Reaped,
}

/// The names of the steps a `Failed` reports.
pub const STEPS: [&str; 8] = [
    "reset signals",
    "new session",
    "set rlimits",
    "set up stdio",
    "change directory",
    "execute",
    "mark inherited descriptors close-on-exec",
    "wait for placement",
];

/// A frame that does not decode.
#[derive(Debug)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Writer {
        Writer(vec![0, 0, 0, 0, tag])
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn list(&mut self, items: &[Vec<u8>]) {
        self.u32(items.len() as u32);
        for item in items {
            self.bytes(item);
        }
    }
    /// The frame, its length filled in.
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, Malformed> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn list(&mut self) -> Result<Vec<Vec<u8>>, Malformed> {
        let n = self.u32()? as usize;
        // Each item takes at least its 4-byte length: a count beyond that is a lie.
        if n > self.0.len() / 4 {
            return Err(Malformed("list count"));
        }
        (0..n).map(|_| self.bytes()).collect()
    }
    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed("trailing bytes"))
        }
    }
}

impl ToAgent {
    /// The whole frame, length first.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToAgent::Exec(exec) => {
                let mut w = Writer::new(1);
                w.list(&exec.argv);
                w.list(&exec.env);
                w.bytes(&exec.cwd);
                let r = exec.rlimits;
                for v in [
                    r.cpu_seconds,
                    r.address_space_bytes,
                    r.processes,
                    r.file_size_bytes,
                    r.open_files,
                ] {
                    w.u64(v);
                }
                w.0.push(u8::from(exec.stdin));
                w.finish()
            }
            ToAgent::Go => Writer::new(2).finish(),
            ToAgent::Abort => Writer::new(3).finish(),
            ToAgent::Reap => Writer::new(4).finish(),
        }
    }

    /// A body (the frame without its length).
    pub fn decode(body: &[u8]) -> Result<ToAgent, Malformed> {
        let mut r = Reader(body);
        let message = match r.u8()? {
            1 => {
                let argv = r.list()?;
                let env = r.list()?;
                let cwd = r.bytes()?;
                let rlimits = WireRlimits {
                    cpu_seconds: r.u64()?,
                    address_space_bytes: r.u64()?,
                    processes: r.u64()?,
                    file_size_bytes: r.u64()?,
                    open_files: r.u64()?,
                };
                let stdin = r.u8()? != 0;
                if argv.is_empty() {
                    return Err(Malformed("empty argv"));
                }
                ToAgent::Exec(Exec {
                    argv,
                    env,
                    cwd,
                    rlimits,
                    stdin,
                })
            }
            2 => ToAgent::Go,
            3 => ToAgent::Abort,
            4 => ToAgent::Reap,
            _ => return Err(Malformed("unknown tag")),
        };
        r.end()?;
        Ok(message)
    }
}

impl FromAgent {
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            FromAgent::Hello { pid } => {
                let mut w = Writer::new(10);
                w.u32(pid);
                w.finish()
            }
            FromAgent::Spawned { pid } => {
                let mut w = Writer::new(11);
                w.u32(pid);
                w.finish()
            }
            FromAgent::Started => Writer::new(12).finish(),
            FromAgent::Failed { step, errno } => {
                let mut w = Writer::new(13);
                w.u32(step);
                w.0.extend_from_slice(&errno.to_le_bytes());
                w.finish()
            }
            FromAgent::Exited { signal, value } => {
                let mut w = Writer::new(14);
                w.0.push(u8::from(signal));
                w.0.extend_from_slice(&value.to_le_bytes());
                w.finish()
            }
            FromAgent::Reaped => Writer::new(15).finish(),
        }
    }

    pub fn decode(body: &[u8]) -> Result<FromAgent, Malformed> {
        let mut r = Reader(body);
        let message = match r.u8()? {
            10 => FromAgent::Hello { pid: r.u32()? },
            11 => FromAgent::Spawned { pid: r.u32()? },
            12 => FromAgent::Started,
            13 => FromAgent::Failed {
                step: r.u32()?,
                errno: r.i32()?,
            },
            14 => FromAgent::Exited {
                signal: r.u8()? != 0,
                value: r.i32()?,
            },
            15 => FromAgent::Reaped,
            _ => return Err(Malformed("unknown tag")),
        };
        r.end()?;
        Ok(message)
    }
}

/// The length of a frame from its 4-byte header, refused above [`MAX_FRAME`] or empty.
pub fn frame_len(header: [u8; 4]) -> Result<usize, Malformed> {
    let n = u32::from_le_bytes(header) as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(Malformed("frame length"));
    }
    Ok(n)
}

/// `sendmsg` of `data` with `fds` as `SCM_RIGHTS` (none when empty). Returns the bytes sent.
pub fn send_with_fds(socket: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for MAX_FDS descriptors, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        assert!(fds.len() <= MAX_FDS);
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds `space` bytes, enough for one header and `fds`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points at valid buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recvmsg` into `buf`, collecting up to [`MAX_FDS`] descriptors (`MSG_CMSG_CLOEXEC`); more,
/// or truncated control data, is an error (the descriptors received are closed either way).
pub fn recv_with_fds(socket: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at valid buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header) / 4;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > MAX_FDS {
        return Err(std::io::Error::other("too many descriptors on a frame"));
    }
    Ok((n as usize, fds))
}

/// The raw numbers of `fds`.
pub fn raw(fds: &[OwnedFd]) -> Vec<RawFd> {
    fds.iter().map(AsRawFd::as_raw_fd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_frames_are_refused() {
        let exec = ToAgent::Exec(Exec {
            argv: vec![
                b"/bin/sh".to_vec(),
                b"-c".to_vec(),
                b"echo '; rm -rf /'".to_vec(),
            ],
            env: vec![b"A=b c".to_vec(), b"EMPTY=".to_vec()],
            cwd: b"/workspace/src".to_vec(),
            rlimits: WireRlimits {
                cpu_seconds: 31,
                address_space_bytes: 0,
                processes: 256,
                file_size_bytes: 1 << 30,
                open_files: 1024,
            },
            stdin: true,
        });
        for message in [exec, ToAgent::Go, ToAgent::Abort, ToAgent::Reap] {
            let frame = message.encode();
            let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, frame.len() - 4);
            assert_eq!(ToAgent::decode(&frame[4..]).unwrap(), message);
        }
        for message in [
            FromAgent::Hello { pid: 2 },
            FromAgent::Spawned { pid: 7 },
            FromAgent::Started,
            FromAgent::Failed { step: 5, errno: 2 },
            FromAgent::Exited {
                signal: true,
                value: 9,
            },
            FromAgent::Reaped,
        ] {
            let frame = message.encode();
            assert_eq!(FromAgent::decode(&frame[4..]).unwrap(), message);
            // One byte more or less is refused.
            let mut longer = frame[4..].to_vec();
            longer.push(0);
            assert!(FromAgent::decode(&longer).is_err());
        }
        assert!(FromAgent::decode(&[11, 1, 2]).is_err());
        assert!(FromAgent::decode(&[99]).is_err());
        assert!(FromAgent::decode(&[]).is_err());
        assert!(frame_len([0, 0, 0, 0]).is_err());
        assert!(frame_len(u32::MAX.to_le_bytes()).is_err());
        // A list count far beyond the bytes present does not allocate or read past the end.
        let mut lying = vec![1u8];
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(ToAgent::decode(&lying).is_err());
    }
}
