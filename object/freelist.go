package object

// freeList keeps up to cap(l) costly values (compression contexts with their buffers, decoders)
// for reuse. A sync.Pool would not do: the garbage collector empties it, and a long-lived pusher
// under a memory limit collects often enough that nearly every push built its context and 4 MiB
// of buffers anew, which in turn made the collector run more.
type freeList[T any] chan T

// get returns a kept value, or one made by mk.
func (l freeList[T]) get(mk func() (T, error)) (T, error) {
	select {
	case v := <-l:
		return v, nil
	default:
		return mk()
	}
}

// put keeps v unless the list is full; a dropped value is left to the garbage collector.
func (l freeList[T]) put(v T) {
	select {
	case l <- v:
	default:
	}
}

// keptCodecs is how many values of each kind are kept: as many as a pusher or prefetcher has
// at work at once by default, with room to spare.
const keptCodecs = 8

// copyBufs are the buffers ReadFrom and CopyTo move raw bytes through.
var copyBufs = make(freeList[[]byte], keptCodecs)

func newCopyBuf() ([]byte, error) { return make([]byte, maxWrite), nil }
