//! Synthesised-phrase cache in front of any TTS engine: the greeting is synthesised before
//! the first call needs it (prefetch), and fixed phrases (greeting, fallback, scripted
//! replies) are synthesised once per node instead of once per call. Cached audio comes back
//! at once; misses go to the engine and are kept when complete.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::engines::{EngineError, TtsEngine, TtsEvent};

/// Longest text worth caching (longer is unlikely to repeat).
const MAX_CACHED_TEXT: usize = 300;

pub struct CachedTts {
    inner: Arc<dyn TtsEngine>,
    capacity: usize,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    audio: HashMap<(String, String), Arc<Vec<i16>>>,
    order: VecDeque<(String, String)>,
    hits: u64,
    misses: u64,
}

impl Cache {
    fn insert(&mut self, key: (String, String), audio: Arc<Vec<i16>>, capacity: usize) {
        if self.audio.insert(key.clone(), audio).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.audio.remove(&old);
            }
        }
    }
}

impl CachedTts {
    pub fn new(inner: Arc<dyn TtsEngine>, capacity: usize) -> Self {
        CachedTts {
            inner,
            capacity,
            cache: Arc::new(Mutex::new(Cache::default())),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Cache) -> R) -> R {
        let mut g = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        self.with(|c| (c.hits, c.misses))
    }

    /// Synthesise `texts` now so calls find them cached. Waits until done.
    pub async fn prefetch(&self, texts: &[String], voice: Option<&str>) -> Result<(), EngineError> {
        for text in texts {
            let key = (voice.unwrap_or("").to_string(), text.clone());
            if self.with(|c| c.audio.contains_key(&key)) {
                continue;
            }
            let mut rx = self.inner.synthesize(text, voice);
            let mut audio = Vec::new();
            while let Some(ev) = rx.recv().await {
                if let TtsEvent::Audio(pcm) = ev? {
                    audio.extend_from_slice(&pcm);
                }
            }
            let cap = self.capacity;
            self.with(|c| c.insert(key, Arc::new(audio), cap));
        }
        Ok(())
    }
}

impl TtsEngine for CachedTts {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn synthesize(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>> {
        let key = (voice.unwrap_or("").to_string(), text.to_string());
        let hit = self.with(|c| {
            let hit = c.audio.get(&key).cloned();
            if hit.is_some() {
                c.hits += 1;
            } else {
                c.misses += 1;
            }
            hit
        });
        if let Some(audio) = hit {
            let (tx, rx) = mpsc::channel(2);
            let _ = tx.try_send(Ok(TtsEvent::Audio(audio.as_ref().clone())));
            // Cached audio is not billed again.
            let _ = tx.try_send(Ok(TtsEvent::Usage { characters: 0 }));
            return rx;
        }
        let mut inner = self.inner.synthesize(text, voice);
        if text.len() > MAX_CACHED_TEXT || self.capacity == 0 {
            return inner;
        }
        let (tx, rx) = mpsc::channel(16);
        let cache = self.cache.clone();
        let cap = self.capacity;
        tokio::spawn(async move {
            let mut audio = Vec::new();
            let mut complete = true;
            while let Some(ev) = inner.recv().await {
                match &ev {
                    Ok(TtsEvent::Audio(pcm)) => audio.extend_from_slice(pcm),
                    Ok(TtsEvent::Usage { .. }) => {}
                    Err(_) => complete = false,
                }
                if tx.send(ev).await.is_err() {
                    // Cancelled (barge-in): keep synthesising into the cache? No: stop.
                    return;
                }
            }
            if complete && !audio.is_empty() {
                let mut c = cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.insert(key, Arc::new(audio), cap);
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fake::FakeTts;
    use std::time::Duration;

    async fn collect(mut rx: mpsc::Receiver<Result<TtsEvent, EngineError>>) -> (usize, u64) {
        let (mut n, mut chars) = (0, 0);
        while let Some(ev) = rx.recv().await {
            match ev.unwrap() {
                TtsEvent::Audio(a) => n += a.len(),
                TtsEvent::Usage { characters } => chars += characters,
            }
        }
        (n, chars)
    }

    #[tokio::test]
    async fn second_synthesis_is_a_hit_and_prefetch_fills() {
        let tts = CachedTts::new(
            Arc::new(FakeTts {
                first_byte: Duration::from_millis(5),
                ms_per_char: 10,
                log: None,
            }),
            8,
        );
        let (a, chars) = collect(tts.synthesize("Hello there.", None)).await;
        assert!(a > 0 && chars == 12);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (b, chars) = collect(tts.synthesize("Hello there.", None)).await;
        assert_eq!((a, chars), (b, 0));
        assert_eq!(tts.stats(), (1, 1));
        tts.prefetch(&["Greeting.".to_string()], Some("en-us"))
            .await
            .unwrap();
        collect(tts.synthesize("Greeting.", Some("en-us"))).await;
        assert_eq!(tts.stats(), (2, 1));
        // Another voice is another entry.
        collect(tts.synthesize("Greeting.", None)).await;
        assert_eq!(tts.stats(), (2, 2));
    }

    #[tokio::test]
    async fn capacity_evicts_oldest() {
        let tts = CachedTts::new(
            Arc::new(FakeTts {
                first_byte: Duration::ZERO,
                ms_per_char: 1,
                log: None,
            }),
            2,
        );
        for t in ["a.", "b.", "c."] {
            tts.prefetch(&[t.to_string()], None).await.unwrap();
        }
        collect(tts.synthesize("a.", None)).await;
        assert_eq!(tts.stats(), (0, 1));
        collect(tts.synthesize("c.", None)).await;
        assert_eq!(tts.stats(), (1, 1));
    }
}
