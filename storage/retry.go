package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// RetryPolicy bounds how a Retry store retries. The zero value gets the defaults below.
type RetryPolicy struct {
	// Attempts is the most tries of one operation. Left zero, it is 8 when MaxElapsed is also
	// zero, and otherwise derived from MaxElapsed (see attemptsFor) so that the tries cannot run
	// out before MaxElapsed has passed: a --retry-for of ten minutes means ten minutes.
	Attempts int
	// MaxElapsed stops retrying once this much time has passed since the first try (default 2m).
	MaxElapsed time.Duration
	// BaseDelay and MaxDelay shape the exponential backoff with full jitter (100ms, 10s).
	BaseDelay, MaxDelay time.Duration
	// IdleTimeout cancels a try during which no byte moved for this long (default 60s), so a
	// stalled connection cannot hang a caller forever while a slow but moving transfer lives on.
	IdleTimeout time.Duration
	// Logger receives one line per retry; nil discards.
	Logger *slog.Logger
	// Sleep waits between tries; tests replace it. nil uses a timer that honours ctx.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.BaseDelay <= 0 {
		p.BaseDelay = 100 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 10 * time.Second
	}
	switch {
	case p.Attempts > 0:
	case p.MaxElapsed > 0:
		p.Attempts = attemptsFor(p.MaxElapsed, p.BaseDelay, p.MaxDelay)
	default:
		p.Attempts = 8
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = 2 * time.Minute
	}
	if p.IdleTimeout <= 0 {
		p.IdleTimeout = 60 * time.Second
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	if p.Sleep == nil {
		p.Sleep = sleepCtx
	}
	return p
}

// attemptsFor is the number of tries whose shortest possible backoffs (half of each delay, the
// low end of the jitter) add up to at least maxElapsed, plus one: with real sleeps the time budget
// always ends the retrying before the count does. The count still bounds a retry loop whose
// sleeps were replaced (tests) or a body that keeps breaking (resumeBody).
func attemptsFor(maxElapsed, base, maxDelay time.Duration) int {
	n := 1
	for total := time.Duration(0); total < maxElapsed; n++ {
		d := base << min(n-1, 20)
		if d > maxDelay || d <= 0 {
			d = maxDelay
		}
		total += d / 2
	}
	return n
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrStalled is the cause of a try cancelled by the idle watchdog.
var ErrStalled = errors.New("no progress within the idle timeout")

// Permanent reports whether retrying err cannot help: the store gave a definite answer (absent,
// present, refused, malformed). A cancelled caller is detected from the caller's own context, since
// a try cancelled by the idle watchdog also reports context.Canceled and must be retried.
func Permanent(err error) bool {
	for _, s := range []error{ErrNotExist, ErrExist, ErrPermission, ErrCredentials, ErrNoContainer, ErrUnsupported, ErrInvalid, errCallback} {
		if errors.Is(err, s) {
			return true
		}
	}
	// A certificate that does not verify will not verify on the next try either.
	var certErr *tls.CertificateVerificationError
	var authErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidErr x509.CertificateInvalidError
	return errors.As(err, &certErr) || errors.As(err, &authErr) || errors.As(err, &hostErr) || errors.As(err, &invalidErr)
}

// Retry wraps s so each operation is retried with exponential backoff and jitter on transient
// errors (throttling, 5xx, resets, timeouts, stalls), and never on a permanent one.
func Retry(s Store, p RetryPolicy) Store {
	return &retryStore{inner: s, p: p.withDefaults()}
}

type retryStore struct {
	inner Store
	p     RetryPolicy
}

func (r *retryStore) Unwrap() Store  { return r.inner }
func (r *retryStore) String() string { return r.inner.String() }

// do runs try until it succeeds, fails permanently, or the budget is spent. Each try gets a
// context cancelled by the idle watchdog; try keeps it alive by calling the progress func.
func (r *retryStore) do(ctx context.Context, op, key string, try func(ctx context.Context, progress func()) error) error {
	start := time.Now()
	var err error
	for attempt := 1; ; attempt++ {
		err = r.once(ctx, try)
		if err == nil || Permanent(err) || ctx.Err() != nil {
			return err
		}
		if attempt >= r.p.Attempts || time.Since(start) >= r.p.MaxElapsed {
			return fmt.Errorf("%w (gave up after %d tries in %s)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		d := min(r.backoff(attempt), r.p.MaxElapsed-time.Since(start)) // the last try lands on the deadline
		r.p.Logger.Warn("storage retry", "store", r.inner.String(), "op", op, "key", key,
			"attempt", attempt, "delay", d.String(), "err", err.Error())
		if serr := r.p.Sleep(ctx, d); serr != nil {
			return err
		}
	}
}

func (r *retryStore) once(ctx context.Context, try func(ctx context.Context, progress func()) error) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(r.p.IdleTimeout, func() { cancel(ErrStalled) })
	defer w.stop()
	err := try(tctx, w.kick)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(tctx), ErrStalled) {
		return fmt.Errorf("%w: %w", ErrStalled, err)
	}
	return err
}

func (r *retryStore) backoff(attempt int) time.Duration {
	d := r.p.BaseDelay << min(attempt-1, 20)
	if d > r.p.MaxDelay || d <= 0 {
		d = r.p.MaxDelay
	}
	return d/2 + rand.N(d/2+1)
}

func (r *retryStore) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return r.do(ctx, "put", key, func(ctx context.Context, progress func()) error {
		return r.inner.Put(ctx, key, progressSeeker{body, progress}, meta)
	})
}

// Create retries like Put. When a try fails without a definite answer, the key is looked up
// before trying again: servers such as MinIO answer a conditional PUT on an existing key before
// reading the body and close the connection, so the client sees a reset where the answer was
// "exists"; and a try whose outcome was lost may have stored the object. Either way the caller
// gets ErrExist and compares content — retrying the upload could never succeed.
func (r *retryStore) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return r.do(ctx, "create", key, func(ctx context.Context, progress func()) error {
		err := Create(ctx, r.inner, key, progressSeeker{body, progress}, meta)
		if err == nil || Permanent(err) || ctx.Err() != nil {
			return err
		}
		if _, serr := r.inner.Stat(ctx, key); serr == nil {
			return fmt.Errorf("%w: %s is present although the create failed (%v)", ErrExist, key, err)
		}
		return err
	})
}

func (r *retryStore) Stat(ctx context.Context, key string) (Info, error) {
	var info Info
	err := r.do(ctx, "stat", key, func(ctx context.Context, _ func()) error {
		var err error
		info, err = r.inner.Stat(ctx, key)
		return err
	})
	return info, err
}

// Delete treats ErrNotExist after a failed try as success: the lost try removed the object.
func (r *retryStore) Delete(ctx context.Context, key string) error {
	tried := false
	return r.do(ctx, "delete", key, func(ctx context.Context, _ func()) error {
		err := r.inner.Delete(ctx, key)
		if tried && errors.Is(err, ErrNotExist) {
			return nil
		}
		tried = true
		return err
	})
}

// List retries a failed listing from the start but never hands fn a key twice: keys at or before
// the last one delivered are skipped, which the lexical order of List makes exact.
func (r *retryStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	var last string
	delivered := false
	var fnErr error
	err := r.do(ctx, "list", prefix, func(ctx context.Context, progress func()) error {
		return r.inner.List(ctx, prefix, func(i Info) error {
			progress()
			if delivered && i.Key <= last {
				return nil
			}
			if err := fn(i); err != nil {
				fnErr = err
				return errCallback
			}
			last, delivered = i.Key, true
			return nil
		})
	})
	if errors.Is(err, errCallback) {
		return fnErr
	}
	return err
}

var errCallback = errors.New("list callback stopped")

func (r *retryStore) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	var info Info
	var body io.ReadCloser
	rb := &resumeBody{r: r, ctx: ctx, key: key}
	err := r.do(ctx, "get", key, func(context.Context, func()) error {
		return rb.open(func(ctx context.Context) (io.ReadCloser, error) {
			var err error
			body, info, err = r.inner.Get(ctx, key)
			return body, err
		})
	})
	if err != nil {
		return nil, Info{}, err
	}
	rb.size = info.Size
	return rb, info, nil
}

func (r *retryStore) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rb := &resumeBody{r: r, ctx: ctx, key: key, off: offset, size: -1, limit: length}
	err := r.do(ctx, "get", key, func(context.Context, func()) error {
		return rb.open(func(ctx context.Context) (io.ReadCloser, error) {
			return GetRange(ctx, r.inner, key, offset, length)
		})
	})
	if err != nil {
		return nil, err
	}
	return rb, nil
}

// resumeBody reads an object and, when the connection breaks mid-body, reopens it with a ranged
// read from where it stopped, within the same retry budget. The frame checksum above catches any
// mismatch between the pieces.
type resumeBody struct {
	r      *retryStore
	ctx    context.Context
	key    string
	off    int64 // absolute offset of the next byte
	start  int64
	size   int64 // object size, -1 if unknown
	limit  int64 // for ranged reads: bytes wanted from start, <0 = to the end
	body   io.ReadCloser
	cancel context.CancelCauseFunc
	dog    *watchdog
	tries  int
}

// open runs get in a context that outlives this try (the caller reads the body later) but that
// the idle watchdog cancels when the body stalls.
func (b *resumeBody) open(get func(ctx context.Context) (io.ReadCloser, error)) error {
	if b.tries == 0 {
		b.start = b.off
	}
	b.tries++
	bctx, cancel := context.WithCancelCause(b.ctx)
	dog := newWatchdog(b.r.p.IdleTimeout, func() { cancel(ErrStalled) })
	body, err := get(bctx)
	if err != nil {
		stalled := errors.Is(context.Cause(bctx), ErrStalled)
		dog.stop()
		cancel(nil)
		if stalled {
			return fmt.Errorf("%w: %w", ErrStalled, err)
		}
		return err
	}
	b.body, b.cancel, b.dog = body, cancel, dog
	return nil
}

func (b *resumeBody) Read(p []byte) (int, error) {
	if b.body == nil {
		return 0, io.ErrClosedPipe
	}
	n, err := b.body.Read(p)
	b.off += int64(n)
	if n > 0 {
		b.dog.kick()
	}
	if err == nil || errors.Is(err, io.EOF) {
		if errors.Is(err, io.EOF) && b.size >= 0 && b.off < b.size {
			err = io.ErrUnexpectedEOF // the connection ended early: resume below
		} else {
			return n, err
		}
	}
	if b.ctx.Err() != nil || Permanent(err) {
		return n, err
	}
	if rerr := b.resume(err); rerr != nil {
		return n, rerr
	}
	if n > 0 {
		return n, nil
	}
	return b.Read(p)
}

func (b *resumeBody) resume(cause error) error {
	b.closeBody()
	if b.tries >= b.r.p.Attempts {
		return fmt.Errorf("get %s: read at offset %d: %w (gave up after %d tries)", b.key, b.off, cause, b.tries)
	}
	b.r.p.Logger.Warn("storage retry", "store", b.r.inner.String(), "op", "read", "key", b.key,
		"offset", b.off, "attempt", b.tries, "err", cause.Error())
	length := int64(-1)
	if b.limit >= 0 {
		length = b.limit - (b.off - b.start)
	}
	return b.r.do(b.ctx, "get", b.key, func(context.Context, func()) error {
		return b.open(func(ctx context.Context) (io.ReadCloser, error) {
			return GetRange(ctx, b.r.inner, b.key, b.off, length)
		})
	})
}

func (b *resumeBody) closeBody() {
	if b.body != nil {
		b.body.Close()
		b.dog.stop()
		b.cancel(nil)
		b.body = nil
	}
}

func (b *resumeBody) Close() error {
	b.closeBody()
	return nil
}

type progressSeeker struct {
	io.ReadSeeker
	progress func()
}

func (p progressSeeker) Read(b []byte) (int, error) {
	n, err := p.ReadSeeker.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}

// watchdog calls fire once if kick is not called for idle.
type watchdog struct {
	mu    sync.Mutex
	idle  time.Duration
	timer *time.Timer
}

func newWatchdog(idle time.Duration, fire func()) *watchdog {
	return &watchdog{idle: idle, timer: time.AfterFunc(idle, fire)}
}

func (w *watchdog) kick() {
	w.mu.Lock()
	w.timer.Reset(w.idle)
	w.mu.Unlock()
}

func (w *watchdog) stop() {
	w.mu.Lock()
	w.timer.Stop()
	w.mu.Unlock()
}
