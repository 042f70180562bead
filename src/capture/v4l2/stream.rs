//! The mmap capture loop, owned here rather than taken from the v4l crate's `Stream`: that one
//! re-queues its last buffer at the start of every `next()`, also after a poll timeout in which no
//! buffer was dequeued, so the kernel answers the second QBUF of a still-queued buffer with EINVAL
//! ("invalid buffer state active") and a slow or paused grabber looked like a lost one. Here the
//! buffer the caller holds is queued again exactly once, before the next wait, and a wait that
//! times out dequeues nothing and queues nothing.
//!
//! Only the v4l crate's raw ioctl and mmap wrappers are used; errors are the kernel's.

use std::io;
use std::os::raw::c_void;
use std::sync::Arc;
use std::time::Duration;

use v4l::buffer::{Metadata, Type};
use v4l::device::Handle;
use v4l::memory::Memory;
use v4l::v4l2;
use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers};

/// One mapped driver buffer.
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

/// What one wait for a buffer ended with.
pub enum Wait<'a> {
    Frame(&'a [u8], Metadata),
    /// Nothing within the timeout: a slow, paused or stalled stream, not an error.
    Timeout,
    /// The driver signalled an event (POLLPRI); the caller takes it ([`super::signal`]).
    Event,
}

/// A streaming mmap capture queue on an open device.
pub struct MmapStream {
    handle: Arc<Handle>,
    bufs: Vec<Mapped>,
    /// The buffer dequeued for the caller, queued again at the start of the next [`Self::next`].
    held: Option<u32>,
    streaming: bool,
}

// SAFETY: the mapped pointers are owned by this value alone (unmapped in Drop) and only read
// through `&self`/`&mut self`; moving the stream to another thread moves that ownership with it.
unsafe impl Send for MmapStream {}

impl MmapStream {
    /// Asks the driver for `count` buffers and maps each of them.
    pub fn new(handle: Arc<Handle>, count: u32) -> io::Result<MmapStream> {
        let mut stream = MmapStream { handle, bufs: Vec::new(), held: None, streaming: false };
        let granted = stream.request(count)?;
        for index in 0..granted {
            let mapped = stream.map(index)?;
            stream.bufs.push(mapped);
        }
        Ok(stream)
    }

    /// Waits up to `timeout` for the next filled buffer or a driver event. Starts streaming on
    /// the first call; gives the buffer held since the last call back to the driver first.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Wait<'_>> {
        if !self.streaming {
            self.start()?;
        }
        if let Some(index) = self.held.take() {
            self.queue(index)?;
        }
        let revents = self.wait(timeout)?;
        if revents == 0 {
            return Ok(Wait::Timeout);
        }
        // An unregistered device (unplugged, vivid's Disconnect) polls as ERR | HUP | PRI: the
        // error goes first, so the DQBUF below reports the kernel's reason (ENODEV) instead of
        // the loss passing for an event.
        if revents & (libc::POLLERR | libc::POLLHUP) == 0 && revents & libc::POLLPRI != 0 {
            return Ok(Wait::Event);
        }
        let (index, meta) = self.dequeue()?;
        self.held = Some(index);
        let buf = self.bufs.get(index as usize).ok_or_else(|| io::Error::other(format!("the driver returned buffer {index}")))?;
        // SAFETY: `ptr` maps `len` bytes of the driver buffer `index`, which stays mapped until
        // Drop; it is dequeued (the driver does not write it) until the next call queues it, and
        // the returned slice borrows `self`, so that call cannot happen while the slice lives.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) };
        Ok(Wait::Frame(bytes, meta))
    }

    fn start(&mut self) -> io::Result<()> {
        for index in 0..self.bufs.len() as u32 {
            self.queue(index)?;
        }
        let mut kind = Type::VideoCapture as u32;
        // SAFETY: STREAMON reads the buffer type from the u32 we own.
        unsafe { v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_STREAMON, &mut kind as *mut _ as *mut c_void)? };
        self.streaming = true;
        Ok(())
    }

    /// Polls for a filled buffer (POLLIN) or an event (POLLPRI); 0 on timeout. POLLERR (a
    /// device that went away) is passed on as readable, so the DQBUF that follows reports the
    /// kernel's reason.
    fn wait(&self, timeout: Duration) -> io::Result<i16> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [libc::pollfd { fd: self.fd(), events: libc::POLLIN | libc::POLLPRI, revents: 0 }];
        loop {
            // SAFETY: one pollfd we own, for the duration of the call.
            match unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) } {
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                -1 => return Err(io::Error::last_os_error()),
                0 => return Ok(0),
                _ => return Ok(fds[0].revents),
            }
        }
    }

    fn queue(&self, index: u32) -> io::Result<()> {
        let mut buf = v4l2_buffer { index, ..buffer_desc() };
        // SAFETY: QBUF reads the v4l2_buffer we own.
        unsafe { v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_QBUF, &mut buf as *mut _ as *mut c_void) }
    }

    fn dequeue(&self) -> io::Result<(u32, Metadata)> {
        let mut buf = buffer_desc();
        // SAFETY: DQBUF fills the v4l2_buffer we own.
        unsafe { v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_DQBUF, &mut buf as *mut _ as *mut c_void)? };
        let meta = Metadata {
            bytesused: buf.bytesused,
            flags: buf.flags.into(),
            field: buf.field,
            timestamp: buf.timestamp.into(),
            sequence: buf.sequence,
        };
        Ok((buf.index, meta))
    }

    fn request(&self, count: u32) -> io::Result<u32> {
        // SAFETY: v4l2_requestbuffers is plain old data; all-zero is a valid value.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        (req.count, req.type_, req.memory) = (count, Type::VideoCapture as u32, Memory::Mmap as u32);
        // SAFETY: REQBUFS reads and fills the v4l2_requestbuffers we own.
        unsafe { v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_REQBUFS, &mut req as *mut _ as *mut c_void)? };
        if req.count == 0 {
            return Err(io::Error::other("the driver granted no capture buffers"));
        }
        Ok(req.count)
    }

    fn map(&self, index: u32) -> io::Result<Mapped> {
        let mut buf = v4l2_buffer { index, ..buffer_desc() };
        // SAFETY: QUERYBUF fills the v4l2_buffer we own; `m.offset` is the member MMAP uses.
        let offset = unsafe {
            v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_QUERYBUF, &mut buf as *mut _ as *mut c_void)?;
            buf.m.offset
        };
        let len = buf.length as usize;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: maps `len` bytes of the driver's buffer at the offset the driver gave; the
        // mapping is unmapped in Drop and never aliased mutably.
        let ptr = unsafe { v4l2::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, self.fd(), offset as libc::off_t)? };
        Ok(Mapped { ptr: ptr as *mut u8, len })
    }

    fn fd(&self) -> std::os::raw::c_int {
        self.handle.fd()
    }
}

impl Drop for MmapStream {
    /// STREAMOFF, unmap, free the buffers. Errors are ignored: a device that went away (ENODEV)
    /// has freed them already, and a grabber in a bad state must not take the thread down.
    fn drop(&mut self) {
        let mut kind = Type::VideoCapture as u32;
        if self.streaming {
            // SAFETY: STREAMOFF reads the buffer type from the u32 we own.
            let _ = unsafe { v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_STREAMOFF, &mut kind as *mut _ as *mut c_void) };
        }
        for buf in self.bufs.drain(..) {
            // SAFETY: each mapping was made by `map` with this length and is dropped once.
            let _ = unsafe { v4l2::munmap(buf.ptr as *mut c_void, buf.len) };
        }
        // SAFETY: v4l2_requestbuffers is plain old data; all-zero is a valid value.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        (req.type_, req.memory) = (Type::VideoCapture as u32, Memory::Mmap as u32);
        // SAFETY: REQBUFS with count 0 reads the v4l2_requestbuffers we own.
        let _ = unsafe { v4l2::ioctl(self.fd(), v4l2::vidioc::VIDIOC_REQBUFS, &mut req as *mut _ as *mut c_void) };
    }
}

fn buffer_desc() -> v4l2_buffer {
    // SAFETY: v4l2_buffer is plain old data; all-zero is a valid value.
    let mut buf: v4l2_buffer = unsafe { std::mem::zeroed() };
    (buf.type_, buf.memory) = (Type::VideoCapture as u32, Memory::Mmap as u32);
    buf
}
