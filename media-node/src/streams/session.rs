//! The per-connection state machine shared by every provider: authentication on `start`,
//! in-order delivery of caller audio, real-time pacing of outbound audio, and mark
//! bookkeeping. What differs per provider (field names, framing, how marks behave on a clear)
//! comes from its [`Dialect`].

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vaani_core::answer::{CALL_ID_PARAM, TOKEN_PARAM};
use vaani_events::Provider;

use super::auth::TokenAuth;
use super::reorder::Reorder;
use super::wire::{WireEvent, WireMedia, WireStart};
use super::{AudioFormat, Event, Media, StartInfo, StreamError};

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// How outbound audio is cut into messages, in bytes of the outbound format.
///
/// A chunk of a still-growing utterance is always exactly `target` bytes. When the utterance
/// is finished (a mark follows, or [`Session::flush`]), its tail is sent whole if it is at most
/// `max` bytes and shorter than `target + min`, padded with silence up to a multiple of `unit`
/// and at least `min` bytes; otherwise `target` bytes go first. So every chunk is a multiple of
/// `unit`, within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub target: usize,
    pub unit: usize,
    pub min: usize,
    pub max: usize,
}

impl Framing {
    /// Fixed-size frames of `frame` bytes (the 20 ms frames of Twilio, Telnyx and Plivo).
    pub fn fixed(frame: usize) -> Self {
        let frame = frame.max(1);
        Framing {
            target: frame,
            unit: frame,
            min: frame,
            max: frame,
        }
    }

    /// `(bytes taken from the queue, bytes on the wire)` for the next chunk, or `None` when an
    /// unfinished utterance has less than a chunk queued.
    pub(crate) fn next_chunk(&self, remaining: usize, finished: bool) -> Option<(usize, usize)> {
        if remaining == 0 {
            return None;
        }
        if !finished {
            return (remaining >= self.target).then_some((self.target, self.target));
        }
        if remaining <= self.max && remaining < self.target.saturating_add(self.min) {
            let padded = remaining.div_ceil(self.unit).saturating_mul(self.unit);
            return Some((remaining, padded.max(self.min).min(self.max)));
        }
        Some((self.target, self.target))
    }
}

/// What makes a provider's stream protocol different. Implemented by [`super::Twilio`],
/// [`super::Exotel`], [`super::Plivo`] and [`super::Telnyx`] only.
pub trait Dialect: Sealed + Sized + 'static {
    const PROVIDER: Provider;
    /// The provider answers a `clear` by sending back the marks it dropped (Twilio, Telnyx).
    /// Those echoes are not "played" and are swallowed.
    const ECHOES_MARKS_ON_CLEAR: bool;
    /// Media frames may arrive out of order and are put back in order (Telnyx).
    const REORDERS: bool;

    /// Parse one text frame.
    fn parse(text: &str) -> Result<WireEvent, StreamError>;
    /// The caller's audio format when `start` names none (`query_rate`: the upgrade URL's
    /// `sample-rate`, Exotel's way of choosing it).
    fn default_format(query_rate: Option<u32>) -> AudioFormat;
    /// The format outbound audio must be in, given the caller's.
    fn outbound_format(
        inbound: AudioFormat,
        configured: Option<AudioFormat>,
    ) -> Result<AudioFormat, StreamError>;
    /// How outbound audio is chunked; `frame` is [`SessionConfig::frame`].
    fn framing(outbound: AudioFormat, frame: Option<Duration>) -> Framing;
    /// The text frame carrying `audio` (raw, in the outbound format).
    fn media_frame(stream_id: &str, outbound: AudioFormat, audio: &[u8]) -> String;
    fn mark_frame(stream_id: &str, name: &str) -> String;
    fn clear_frame(stream_id: &str) -> String;
    /// Inbound payload into the neutral byte order (Telnyx L16 is big-endian on the wire).
    fn inbound_payload(_format: AudioFormat, payload: Vec<u8>) -> Vec<u8> {
        payload
    }
    /// The counter media frames are ordered by, when [`Dialect::REORDERS`].
    fn media_key(m: &WireMedia) -> Option<u64> {
        m.chunk.or(m.sequence)
    }
}

/// Tuning and credentials for one stream. Build with [`SessionConfig::authenticated`] in
/// production; [`SessionConfig::unauthenticated`] skips the token check (local development
/// and tests only).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Media-token check on `start`; `None` accepts any stream.
    pub auth: Option<TokenAuth>,
    /// The query string of the upgrade request's URL (without `?`): Plivo and Exotel carry
    /// `vaani_call_id` / `vaani_token` there, Exotel also `sample-rate`.
    pub query: Option<String>,
    /// How far ahead of playout a chunk may be sent: a chunk goes out only when the audio
    /// already sent will finish playing within `lead`. Default 60 ms.
    pub lead: Duration,
    /// Outbound chunk duration. Default 20 ms (Twilio, Telnyx, Plivo) or 100 ms (Exotel,
    /// raised to Exotel's 3.2 KB minimum).
    pub frame: Option<Duration>,
    /// Telnyx: the `bidirectionalCodec` / rate the stream was started with (default μ-law
    /// 8 kHz, what our TeXML asks for). Ignored by the others, whose outbound format is fixed
    /// by the stream.
    pub outbound_format: Option<AudioFormat>,
    /// Telnyx: how many later frames are held while waiting for a missing one. Default 5.
    pub reorder_window: usize,
    /// Outbound audio that may wait unsent, in bytes. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Longest text frame accepted. Default 1 MiB.
    pub max_message_bytes: usize,
}

impl SessionConfig {
    pub fn authenticated(auth: TokenAuth) -> Self {
        SessionConfig {
            auth: Some(auth),
            ..Self::unauthenticated()
        }
    }

    pub fn unauthenticated() -> Self {
        SessionConfig {
            auth: None,
            query: None,
            lead: Duration::from_millis(60),
            frame: None,
            outbound_format: None,
            reorder_window: 5,
            max_queued_bytes: 16 << 20,
            max_message_bytes: 1 << 20,
        }
    }

    /// Set the upgrade URL's query string (a leading `?` is dropped).
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        let q: String = query.into();
        self.query = Some(q.strip_prefix('?').map(str::to_string).unwrap_or(q));
        self
    }
}

/// What [`Session::clear`] dropped, for truncating the agent's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearReport {
    /// Marks that will never be reported played: those queued behind the dropped audio and
    /// those already sent but not yet acknowledged, in order.
    pub cleared_marks: Vec<String>,
    /// How much of the outbound audio timeline had (by our pacing clock) been played when the
    /// clear was issued: at least [`Session::played_ms`], at most [`ClearReport::sent_ms`].
    pub played_estimate_ms: u64,
    /// The outbound audio timeline's end: everything ever handed to the provider.
    pub sent_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitStart,
    Streaming,
    Ended,
}

#[derive(Debug)]
enum Item {
    Audio {
        data: Vec<u8>,
        pos: usize,
        finished: bool,
    },
    Mark(String),
}

/// At most this many swallowed-echo names are remembered.
const MAX_EXPECTED_ECHOES: usize = 256;

/// One provider media-stream connection. See the [module docs](super) for the driver loop.
///
/// Outbound audio lives on one timeline measured in milliseconds of audio sent
/// ([`Session::sent_ms`]); a mark sits at the timeline position where it was sent, and
/// [`Session::played_ms`] is the position of the last mark the provider reported played.
/// Record `sent_ms()` when an utterance starts to know later how much of it was heard.
#[derive(Debug)]
pub struct Session<D: Dialect> {
    cfg: SessionConfig,
    query: BTreeMap<String, String>,
    t0: Instant,
    utc0: DateTime<Utc>,
    last_now: Instant,
    phase: Phase,
    stream_id: String,
    inbound: Option<AudioFormat>,
    outbound: Option<AudioFormat>,
    framing: Option<Framing>,
    reorder: Reorder,
    /// Media that overtook `start` (only where frames may arrive out of order), held until
    /// the stream is authenticated.
    early: Vec<WireMedia>,

    queue: VecDeque<Item>,
    queued_bytes: usize,
    control: VecDeque<String>,
    playout_end: Option<Instant>,
    sent: Duration,
    in_flight: VecDeque<(String, Duration)>,
    expect_echo: VecDeque<String>,
    confirmed: Duration,

    unknown_events: u64,
    ignored: u64,
    stale_marks: u64,
    frames_sent: u64,
    _dialect: PhantomData<D>,
}

impl<D: Dialect> Session<D> {
    /// A session for a connection accepted at `now` (`now_utc` on the wall clock; token
    /// expiry is checked against `now_utc` plus the time elapsed since).
    pub fn new(cfg: SessionConfig, now: Instant, now_utc: DateTime<Utc>) -> Self {
        let query = cfg
            .query
            .as_deref()
            .map(|q| {
                let mut m = BTreeMap::new();
                for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                    m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
                }
                m
            })
            .unwrap_or_default();
        let window = cfg.reorder_window;
        Session {
            cfg,
            query,
            t0: now,
            utc0: now_utc,
            last_now: now,
            phase: Phase::AwaitStart,
            stream_id: String::new(),
            inbound: None,
            outbound: None,
            framing: None,
            reorder: Reorder::new(window),
            early: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            control: VecDeque::new(),
            playout_end: None,
            sent: Duration::ZERO,
            in_flight: VecDeque::new(),
            expect_echo: VecDeque::new(),
            confirmed: Duration::ZERO,
            unknown_events: 0,
            ignored: 0,
            stale_marks: 0,
            frames_sent: 0,
            _dialect: PhantomData,
        }
    }

    pub fn provider(&self) -> Provider {
        D::PROVIDER
    }

    /// Feed one text frame from the provider.
    ///
    /// Errors leave the socket's fate to the driver (close it). An authentication error also
    /// ends the session: nothing more is delivered or sent.
    pub fn on_text(&mut self, now: Instant, text: &str) -> Result<Vec<Event>, StreamError> {
        self.touch(now);
        if text.len() > self.cfg.max_message_bytes {
            return Err(StreamError::TooLarge(text.len()));
        }
        if self.phase == Phase::Ended {
            self.ignored += 1;
            return Ok(Vec::new());
        }
        let started = self.phase == Phase::Streaming;
        match D::parse(text)? {
            WireEvent::Connected => Ok(vec![Event::Connected]),
            WireEvent::Start(s) => {
                if started {
                    return Err(StreamError::DuplicateStart);
                }
                match self.start(now, s) {
                    Ok(info) => {
                        let mut out = vec![Event::Start(info)];
                        for m in std::mem::take(&mut self.early) {
                            out.extend(self.media(m));
                        }
                        Ok(out)
                    }
                    Err(e) => {
                        if e.is_auth() {
                            self.end();
                        }
                        Err(e)
                    }
                }
            }
            WireEvent::Media(m) => {
                if started {
                    return Ok(self.media(m));
                }
                // Where frame order is not guaranteed, a frame may overtake `start`.
                if D::REORDERS && self.early.len() < self.cfg.reorder_window {
                    self.early.push(m);
                    return Ok(Vec::new());
                }
                Err(StreamError::NotStarted("media"))
            }
            WireEvent::Dtmf { digit, duration_ms } => {
                if !started {
                    return Err(StreamError::NotStarted("dtmf"));
                }
                Ok(vec![Event::Dtmf { digit, duration_ms }])
            }
            WireEvent::Mark { name } => {
                if !started {
                    return Err(StreamError::NotStarted("mark"));
                }
                Ok(self.mark_played(&name))
            }
            WireEvent::Cleared => {
                if !started {
                    return Err(StreamError::NotStarted("clearedAudio"));
                }
                Ok(vec![Event::Cleared])
            }
            WireEvent::Stop { reason } => {
                let mut out = self.drain_reorder();
                out.push(Event::Stop { reason });
                self.end();
                Ok(out)
            }
            WireEvent::Error {
                code,
                title,
                detail,
            } => Ok(vec![Event::ProviderError {
                code,
                title,
                detail,
            }]),
            WireEvent::Unknown { .. } => {
                self.unknown_events += 1;
                Ok(Vec::new())
            }
        }
    }

    /// The socket closed. Releases any held frames and, unless the provider sent `stop`,
    /// reports [`Event::Closed`] (how every Plivo stream ends).
    pub fn on_close(&mut self, now: Instant) -> Vec<Event> {
        self.touch(now);
        if self.phase == Phase::Ended {
            return Vec::new();
        }
        let mut out = self.drain_reorder();
        out.push(Event::Closed);
        self.end();
        out
    }

    /// Queue outbound audio (raw, in [`StartInfo::outbound_format`]). It is sent paced at real
    /// time; an utterance's last partial chunk waits for more audio, a [`Session::mark`] or
    /// [`Session::flush`]. Audio queued before `start` waits for it.
    pub fn send_audio(&mut self, now: Instant, audio: &[u8]) -> Result<(), StreamError> {
        self.touch(now);
        if self.phase == Phase::Ended {
            return Err(StreamError::Ended);
        }
        if audio.is_empty() {
            return Ok(());
        }
        if self.queued_bytes.saturating_add(audio.len()) > self.cfg.max_queued_bytes {
            return Err(StreamError::OutboundFull);
        }
        self.queued_bytes += audio.len();
        if let Some(Item::Audio {
            data,
            finished: false,
            ..
        }) = self.queue.back_mut()
        {
            data.extend_from_slice(audio);
        } else {
            self.queue.push_back(Item::Audio {
                data: audio.to_vec(),
                pos: 0,
                finished: false,
            });
        }
        Ok(())
    }

    /// End the current utterance: its tail chunk may go out short (padded with silence, see
    /// [`Framing`]).
    pub fn flush(&mut self) {
        if let Some(Item::Audio { finished, .. }) = self.queue.back_mut() {
            *finished = true;
        }
    }

    /// Queue a mark after the audio queued so far (which is flushed). The provider reports it
    /// as [`Event::Mark`] once that audio has played; a [`Session::clear`] resolves it as
    /// cleared instead. Use names unique within the stream.
    pub fn mark(&mut self, name: impl Into<String>) -> Result<(), StreamError> {
        if self.phase == Phase::Ended {
            return Err(StreamError::Ended);
        }
        self.flush();
        self.queue.push_back(Item::Mark(name.into()));
        Ok(())
    }

    /// Barge-in: drop all queued outbound audio now and tell the provider to drop what it has
    /// buffered. Marks not yet played are resolved as cleared (returned here, never reported
    /// as [`Event::Mark`]; Twilio's and Telnyx's echoes of them are swallowed, and Plivo,
    /// which never acknowledges checkpoints after `clearAudio`, needs nothing more).
    pub fn clear(&mut self, now: Instant) -> ClearReport {
        self.touch(now);
        let played_estimate = self.estimated_played(now);
        let mut cleared_marks = Vec::new();
        let streaming = self.phase == Phase::Streaming;
        for (name, _) in self.in_flight.drain(..) {
            if D::ECHOES_MARKS_ON_CLEAR && streaming {
                if self.expect_echo.len() >= MAX_EXPECTED_ECHOES {
                    self.expect_echo.pop_front();
                }
                self.expect_echo.push_back(name.clone());
            }
            cleared_marks.push(name);
        }
        for item in self.queue.drain(..) {
            if let Item::Mark(name) = item {
                cleared_marks.push(name);
            }
        }
        self.queued_bytes = 0;
        if streaming {
            self.control.push_back(D::clear_frame(&self.stream_id));
            // The provider's buffer is empty from here on: new audio plays at once.
            self.playout_end = Some(now);
        }
        ClearReport {
            cleared_marks,
            played_estimate_ms: ms(played_estimate),
            sent_ms: ms(self.sent),
        }
    }

    /// The next text frame to send, if one is due at `now`. Call until `None` after every
    /// input and whenever [`Session::next_deadline`] passes.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<String> {
        self.touch(now);
        if self.phase != Phase::Streaming {
            return None;
        }
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        let outbound = self.outbound?;
        let framing = self.framing?;
        loop {
            match self.queue.front_mut()? {
                Item::Mark(_) => {
                    if let Some(Item::Mark(name)) = self.queue.pop_front() {
                        let frame = D::mark_frame(&self.stream_id, &name);
                        self.in_flight.push_back((name, self.sent));
                        return Some(frame);
                    }
                }
                Item::Audio {
                    data,
                    pos,
                    finished,
                } => {
                    let remaining = data.len().saturating_sub(*pos);
                    if remaining == 0 && *finished {
                        self.queue.pop_front();
                        continue;
                    }
                    let (take, wire_len) = framing.next_chunk(remaining, *finished)?;
                    let ahead = self
                        .playout_end
                        .map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
                    if ahead > self.cfg.lead {
                        return None;
                    }
                    let mut chunk = Vec::with_capacity(wire_len);
                    chunk.extend_from_slice(data.get(*pos..*pos + take).unwrap_or_default());
                    chunk.resize(wire_len, outbound.encoding.silence_byte());
                    *pos += take;
                    if *pos >= 64 * 1024 && *pos * 2 >= data.len() {
                        data.drain(..*pos);
                        *pos = 0;
                    }
                    self.queued_bytes = self.queued_bytes.saturating_sub(take);
                    let dur = outbound.duration_of(wire_len);
                    let start = self.playout_end.map_or(now, |end| end.max(now));
                    self.playout_end = Some(start + dur);
                    self.sent += dur;
                    self.frames_sent += 1;
                    return Some(D::media_frame(&self.stream_id, outbound, &chunk));
                }
            }
        }
    }

    /// When [`Session::poll_transmit`] will next have something (a time at or before the
    /// latest `now` seen means "now"); `None` while nothing is waiting on time.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Streaming {
            return None;
        }
        if !self.control.is_empty() {
            return Some(self.last_now);
        }
        let framing = self.framing?;
        match self.queue.front()? {
            Item::Mark(_) => Some(self.last_now),
            Item::Audio {
                data,
                pos,
                finished,
            } => {
                let remaining = data.len().saturating_sub(*pos);
                if remaining == 0 && *finished {
                    return Some(self.last_now);
                }
                framing.next_chunk(remaining, *finished)?;
                Some(
                    self.playout_end
                        .and_then(|end| end.checked_sub(self.cfg.lead))
                        .unwrap_or(self.last_now),
                )
            }
        }
    }

    /// Outbound timeline position of the last mark reported played, in ms.
    pub fn played_ms(&self) -> u64 {
        ms(self.confirmed)
    }

    /// Outbound timeline length: ms of audio handed to the provider so far.
    pub fn sent_ms(&self) -> u64 {
        ms(self.sent)
    }

    /// How much of the timeline has played by our pacing clock at `now` (no acknowledgment
    /// needed; network delay makes it run slightly ahead of the truth).
    pub fn estimated_played_ms(&self, now: Instant) -> u64 {
        ms(self.estimated_played(now))
    }

    /// Queued outbound audio not yet sent, in ms (0 before `start`).
    pub fn queued_ms(&self) -> u64 {
        self.outbound
            .map_or(0, |f| ms(f.duration_of(self.queued_bytes)))
    }

    /// Marks sent and not yet reported played, oldest first.
    pub fn pending_marks(&self) -> impl Iterator<Item = &str> {
        self.in_flight
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.queue.iter().filter_map(|i| match i {
                Item::Mark(n) => Some(n.as_str()),
                Item::Audio { .. } => None,
            }))
    }

    pub fn stream_id(&self) -> Option<&str> {
        (self.phase != Phase::AwaitStart && !self.stream_id.is_empty())
            .then_some(self.stream_id.as_str())
    }

    pub fn outbound_format(&self) -> Option<AudioFormat> {
        self.outbound
    }

    pub fn is_started(&self) -> bool {
        self.phase == Phase::Streaming
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Messages with an event name this parser does not know.
    pub fn unknown_events(&self) -> u64 {
        self.unknown_events
    }

    /// Messages ignored: media of another track, anything after the stream ended.
    pub fn ignored_messages(&self) -> u64 {
        self.ignored
    }

    /// Media frames dropped as late or duplicate, and frame counters skipped as lost (Telnyx).
    pub fn reorder_losses(&self) -> (u64, u64) {
        (self.reorder.dropped, self.reorder.skipped)
    }

    /// Mark reports that matched no pending mark.
    pub fn stale_marks(&self) -> u64 {
        self.stale_marks
    }

    /// Outbound audio messages sent.
    pub fn frames_sent(&self) -> u64 {
        self.frames_sent
    }

    fn touch(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn end(&mut self) {
        self.phase = Phase::Ended;
        self.early.clear();
        self.queue.clear();
        self.queued_bytes = 0;
        self.control.clear();
    }

    fn estimated_played(&self, now: Instant) -> Duration {
        let ahead = self
            .playout_end
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
        self.sent.saturating_sub(ahead).max(self.confirmed)
    }

    fn start(&mut self, now: Instant, s: WireStart) -> Result<StartInfo, StreamError> {
        let mut custom = s.custom_parameters;
        let mut lift = |key: &str| {
            custom
                .remove(key)
                .filter(|v| !v.is_empty())
                .or_else(|| self.query.get(key).filter(|v| !v.is_empty()).cloned())
        };
        let call_id = lift(CALL_ID_PARAM);
        let token = lift(TOKEN_PARAM);
        if let Some(auth) = &self.cfg.auth {
            let elapsed = now.saturating_duration_since(self.t0);
            let utc = self.utc0
                + chrono::Duration::from_std(elapsed).unwrap_or_else(|_| chrono::Duration::zero());
            auth.check(call_id.as_deref(), token.as_deref(), utc)?;
        }
        let query_rate = self
            .query
            .get("sample-rate")
            .and_then(|r| r.trim().parse::<u32>().ok());
        let format = s.format.unwrap_or_else(|| D::default_format(query_rate));
        let outbound = D::outbound_format(format, self.cfg.outbound_format)?;
        let framing = D::framing(outbound, self.cfg.frame);
        if framing.unit == 0 || framing.min > framing.max || framing.target > framing.max {
            return Err(StreamError::UnsupportedFormat(format!(
                "no valid chunk size for {outbound:?}"
            )));
        }
        self.stream_id = s.stream_id.clone();
        self.inbound = Some(format);
        self.outbound = Some(outbound);
        self.framing = Some(framing);
        self.phase = Phase::Streaming;
        Ok(StartInfo {
            provider_call_id: s.provider_call_id,
            stream_id: s.stream_id,
            account_id: s.account_id,
            from: s.from,
            to: s.to,
            custom_parameters: custom,
            format,
            outbound_format: outbound,
            call_id,
            token,
        })
    }

    fn media(&mut self, m: WireMedia) -> Vec<Event> {
        let outbound_track = m
            .track
            .as_deref()
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("outbound"));
        if outbound_track {
            self.ignored += 1;
            return Vec::new();
        }
        let key = D::media_key(&m);
        let format = self.inbound.unwrap_or_else(|| D::default_format(None));
        let media = Media {
            payload: D::inbound_payload(format, m.payload),
            timestamp_ms: m.timestamp_ms,
            chunk: m.chunk,
            sequence: m.sequence,
        };
        if !D::REORDERS {
            return vec![Event::Media(media)];
        }
        let mut out = Vec::new();
        self.reorder.push(key, media, &mut out);
        out.into_iter().map(Event::Media).collect()
    }

    fn drain_reorder(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.reorder.flush(&mut out);
        out.into_iter().map(Event::Media).collect()
    }

    /// The provider says mark `name` was reached.
    fn mark_played(&mut self, name: &str) -> Vec<Event> {
        if D::ECHOES_MARKS_ON_CLEAR {
            if let Some(i) = self.expect_echo.iter().position(|n| n == name) {
                self.expect_echo.remove(i);
                return Vec::new();
            }
        }
        let Some(i) = self.in_flight.iter().position(|(n, _)| n == name) else {
            self.stale_marks += 1;
            return Vec::new();
        };
        // Marks are reported in order; a later one played means the earlier ones did too.
        let mut out = Vec::with_capacity(i + 1);
        for (n, pos) in self.in_flight.drain(..=i) {
            self.confirmed = self.confirmed.max(pos);
            out.push(Event::Mark { name: n });
        }
        out
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_frames_pad_only_a_finished_tail() {
        let f = Framing::fixed(160);
        assert_eq!(f.next_chunk(100, false), None);
        assert_eq!(f.next_chunk(160, false), Some((160, 160)));
        assert_eq!(f.next_chunk(400, false), Some((160, 160)));
        assert_eq!(f.next_chunk(100, true), Some((100, 160)));
        assert_eq!(f.next_chunk(200, true), Some((160, 160)));
        assert_eq!(f.next_chunk(0, true), None);
    }

    #[test]
    fn large_chunks_merge_a_short_finished_tail() {
        let f = Framing {
            target: 3200,
            unit: 320,
            min: 3200,
            max: 99840,
        };
        assert_eq!(f.next_chunk(3000, false), None);
        assert_eq!(f.next_chunk(5000, false), Some((3200, 3200)));
        // 5000 finished: taking 3200 would leave 1800 < min, so all goes at once.
        assert_eq!(f.next_chunk(5000, true), Some((5000, 5120)));
        assert_eq!(f.next_chunk(100, true), Some((100, 3200)));
        assert_eq!(f.next_chunk(6400, true), Some((3200, 3200)));
    }
}
