/* The splice of a diffed elements file (appliance/model/splice.py), compiled. Optional.

   Two functions, each the exact twin of one in splice.py (the tests hold them equal,
   byte for byte):

   splice_words(width, bounds, removed, added): the word arrays of spans (``bounds``, as
   Spans.words gives them) with the sorted values ``removed`` taken out and ``added`` put
   in, merged: a tuple of bytes (firsts' words, then lasts'; the same objects twice where
   every span is one value), or None where a removed value is not held or an added one
   is. One pass over the old spans, no Python object per value.

   differ_lines(width, gone, came): the addresses of the lines of ``gone`` (inet_pton, one a
   line) not in ``came`` and those of ``came`` not in ``gone``, sorted and without repeats,
   as word arrays' bytes: (removed words, added words); None where a line that is in one
   part only is not one address (a line in both only moved).

   differ_values(width, bounds, data, count): a whole file's lines read as differ_lines
   reads them, against the old spans ``bounds`` (which must hold ``count`` values): the
   spans of the file's values, the old values not among them and those new (words, as
   above); None where a line is not one address, a value is given twice, or the spans do
   not hold ``count`` values. One pass over the file, a radix sort, one merge.

   A value of 32 bits or less is one native 32-bit word; of 128 bits, two native 64-bit
   words (the high half, then the low), each in its own array. Malformed input (a width
   other than 16, 32 or 128, arrays of unequal or partial lengths, spans or values out of
   order, overlapping or touching, a value too wide) raises ValueError. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t hi, lo; /* hi is 0 for a value of 32 bits or less */
} value;

static inline int less(value a, value b) {
    return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

static inline int same(value a, value b) { return a.hi == b.hi && a.lo == b.lo; }

/* Whether b is a + 1 (false where a is the largest value). */
static inline int next_to(value a, value b) {
    if (a.lo != UINT64_MAX)
        return b.hi == a.hi && b.lo == a.lo + 1;
    return a.hi != UINT64_MAX && b.lo == 0 && b.hi == a.hi + 1;
}

static inline value up(value a) { /* a + 1; never called on the largest value */
    value b = a;
    if (++b.lo == 0)
        b.hi++;
    return b;
}

static inline value down(value a) { /* a - 1; never called on 0 */
    value b = a;
    if (b.lo-- == 0)
        b.hi--;
    return b;
}

static int compare(const void *x, const void *y) {
    value a = *(const value *)x, b = *(const value *)y;
    return less(a, b) ? -1 : less(b, a) ? 1 : 0;
}

/* One bound's (or a list of values') words: one 32-bit array, or two 64-bit ones. */
typedef struct {
    int wide;
    const unsigned char *hi, *lo;
    Py_ssize_t n;
} column;

#define ALWAYS static inline __attribute__((always_inline))

/* Each accessor takes ``wide`` as an argument: the loops call them with a constant and are
   compiled once for 32-bit words and once for 64-bit pairs. */
ALWAYS value at_of(const column *c, Py_ssize_t i, int wide) {
    value v;
    if (wide) {
        memcpy(&v.hi, c->hi + 8 * i, 8);
        memcpy(&v.lo, c->lo + 8 * i, 8);
    } else {
        uint32_t word;
        memcpy(&word, c->lo + 4 * i, 4);
        v.hi = 0;
        v.lo = word;
    }
    return v;
}

static int wide_of(int width) {
    if (width == 16 || width == 32)
        return 0;
    if (width == 128)
        return 1;
    PyErr_Format(PyExc_ValueError, "unsupported width %d", width);
    return -1;
}

/* The arrays of one column, from ``items`` at ``start`` (1 or 2 of them). The buffers are
   released by release_all. */
typedef struct {
    Py_buffer views[8];
    int count;
} held;

static void release_all(held *h) {
    for (int i = 0; i < h->count; i++)
        PyBuffer_Release(&h->views[i]);
    h->count = 0;
}

static int view_of(held *h, PyObject *item, Py_ssize_t size, Py_ssize_t *n) {
    Py_buffer *view = &h->views[h->count];
    if (PyObject_GetBuffer(item, view, PyBUF_SIMPLE) < 0)
        return -1;
    h->count++;
    if (view->len % size != 0) {
        PyErr_SetString(PyExc_ValueError, "a word array of a partial word");
        return -1;
    }
    Py_ssize_t count = view->len / size;
    if (*n >= 0 && count != *n) {
        PyErr_SetString(PyExc_ValueError, "word arrays of unequal lengths");
        return -1;
    }
    *n = count;
    return 0;
}

/* ``items`` (a tuple or list) split into columns of ``parts`` arrays each. */
static int columns_of(held *h, PyObject *items, int wide, column *out, int parts, Py_ssize_t *n) {
    PyObject *seq = PySequence_Fast(items, "word arrays: a sequence expected");
    if (seq == NULL)
        return -1;
    int per = wide ? 2 : 1;
    if (PySequence_Fast_GET_SIZE(seq) != (Py_ssize_t)(per * parts)) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "the wrong number of word arrays");
        return -1;
    }
    PyObject **items_of = PySequence_Fast_ITEMS(seq);
    Py_ssize_t size = wide ? 8 : 4;
    for (int p = 0; p < parts; p++) {
        column *c = &out[p];
        c->wide = wide;
        int first = h->count;
        for (int k = 0; k < per; k++) {
            if (view_of(h, items_of[p * per + k], size, n) < 0) {
                Py_DECREF(seq);
                return -1;
            }
        }
        c->hi = wide ? h->views[first].buf : NULL;
        c->lo = h->views[first + per - 1].buf;
        c->n = *n;
    }
    Py_DECREF(seq);
    return 0;
}

/* The new spans, written into bytes objects of room for ``room`` spans. */
typedef struct {
    int wide;
    PyObject *words[4]; /* firsts (hi, lo or the one), then lasts likewise */
    unsigned char *data[4];
    Py_ssize_t n;
    value last; /* of the span written last */
    int points; /* every span so far a single value */
} writer;

ALWAYS void put_of(writer *w, int bound, Py_ssize_t i, value v, int wide) {
    int per = wide ? 2 : 1;
    if (wide) {
        memcpy(w->data[bound * per] + 8 * i, &v.hi, 8);
        memcpy(w->data[bound * per + 1] + 8 * i, &v.lo, 8);
    } else {
        uint32_t word = (uint32_t)v.lo;
        memcpy(w->data[bound * per] + 4 * i, &word, 4);
    }
}

/* The lasts of the first ``count`` spans written out: while every span is one value only
   the firsts are written (the lasts are the same words), until a wider span comes. */
static void spread(writer *w, Py_ssize_t count) {
    if (!w->points)
        return;
    int per = w->wide ? 2 : 1;
    Py_ssize_t size = w->wide ? 8 : 4;
    for (int i = 0; i < per; i++)
        memcpy(w->data[per + i], w->data[i], (size_t)(count * size));
    w->points = 0;
}

ALWAYS void emit_of(writer *w, value first, value last, int wide) {
    if (w->n > 0 && next_to(w->last, first)) {
        spread(w, w->n);
        put_of(w, 1, w->n - 1, last, wide);
    } else {
        put_of(w, 0, w->n, first, wide);
        if (!same(first, last))
            spread(w, w->n);
        if (!w->points)
            put_of(w, 1, w->n, last, wide);
        w->n++;
    }
    w->last = last;
}

static inline value at(const column *c, Py_ssize_t i) { return at_of(c, i, c->wide); }

static int writer_open(writer *w, int wide, Py_ssize_t room) {
    int count = wide ? 4 : 2;
    Py_ssize_t size = wide ? 8 : 4;
    memset(w, 0, sizeof(*w));
    w->wide = wide;
    w->points = 1;
    if (room > PY_SSIZE_T_MAX / size) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < count; i++) {
        w->words[i] = PyBytes_FromStringAndSize(NULL, room * size);
        if (w->words[i] == NULL)
            return -1;
        w->data[i] = (unsigned char *)PyBytes_AS_STRING(w->words[i]);
    }
    return 0;
}

static void writer_drop(writer *w) {
    for (int i = 0; i < 4; i++)
        Py_CLEAR(w->words[i]);
}

/* The tuple of the written words (lasts the same objects as firsts where all are points). */
static PyObject *writer_close(writer *w) {
    int per = w->wide ? 2 : 1;
    Py_ssize_t size = w->wide ? 8 : 4;
    for (int i = 0; i < 2 * per; i++) {
        if (_PyBytes_Resize(&w->words[i], w->n * size) < 0) {
            writer_drop(w);
            return NULL;
        }
    }
    PyObject *out = PyTuple_New(2 * per);
    if (out == NULL) {
        writer_drop(w);
        return NULL;
    }
    for (int i = 0; i < per; i++) {
        PyObject *first = w->words[i];
        PyObject *last = w->points ? first : w->words[per + i];
        Py_INCREF(first);
        Py_INCREF(last);
        PyTuple_SET_ITEM(out, i, first);
        PyTuple_SET_ITEM(out, per + i, last);
    }
    writer_drop(w);
    return out;
}

static int too_wide(int width, value v) {
    if (width < 128 && (v.hi != 0 || (v.lo >> width) != 0)) {
        PyErr_SetString(PyExc_ValueError, "a value wider than the set's width");
        return 1;
    }
    return 0;
}

static int increasing(int width, const column *c, const char *what) {
    for (Py_ssize_t i = 0; i < c->n; i++) {
        value v = at(c, i);
        if (too_wide(width, v))
            return 0;
        if (i > 0 && !less(at(c, i - 1), v)) {
            PyErr_Format(PyExc_ValueError, "%s: values out of order or repeated", what);
            return 0;
        }
    }
    return 1;
}

/* The old spans ``bounds`` less ``removed`` with ``added``, written to ``w``: 0, or 1 where
   a removed value is not held or an added one is, -1 with ValueError for spans out of
   order. */
ALWAYS int merge(writer *w, const column *bounds, const column *removed, const column *added,
                 int width, int wide) {
    Py_ssize_t n = bounds[0].n, nr = removed->n, na = added->n;
    Py_ssize_t j = 0, k = 0;
    value previous = {0, 0};
    value next_added = k < na ? at_of(added, k, wide) : (value){0, 0};
    for (Py_ssize_t i = 0; i < n; i++) {
        value first = at_of(&bounds[0], i, wide), last = at_of(&bounds[1], i, wide);
        if (too_wide(width, last) || less(last, first) ||
            (i > 0 && (!less(previous, first) || next_to(previous, first)))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "spans out of order, overlapping or touching");
            return -1;
        }
        previous = last;
        while (k < na && less(next_added, first)) {
            emit_of(w, next_added, next_added, wide);
            if (++k < na)
                next_added = at_of(added, k, wide);
        }
        if (k < na && !less(last, next_added))
            return 1; /* an added value is held already */
        value from = first;
        int rest = 1; /* values of the span left from ``from`` on */
        for (; j < nr; j++) {
            value gone = at_of(removed, j, wide);
            if (less(last, gone))
                break;
            if (less(gone, first))
                return 1; /* between two spans: not held */
            if (less(from, gone))
                emit_of(w, from, down(gone), wide);
            if (same(gone, last)) {
                rest = 0;
                j++;
                break;
            }
            from = up(gone);
        }
        if (rest)
            emit_of(w, from, last, wide);
    }
    for (; k < na; k++)
        emit_of(w, at_of(added, k, wide), at_of(added, k, wide), wide);
    return j < nr; /* a removed value above every span: not held */
}

static PyObject *splice_words(PyObject *self, PyObject *args) {
    (void)self;
    int width;
    PyObject *bounds_arg, *removed_arg, *added_arg;
    if (!PyArg_ParseTuple(args, "iOOO:splice_words", &width, &bounds_arg, &removed_arg,
                          &added_arg))
        return NULL;
    int wide = wide_of(width);
    if (wide < 0)
        return NULL;
    held h = {.count = 0};
    column bounds[2], removed, added;
    Py_ssize_t n = -1, nr = -1, na = -1;
    PyObject *result = NULL;
    if (columns_of(&h, bounds_arg, wide, bounds, 2, &n) < 0 ||
        columns_of(&h, removed_arg, wide, &removed, 1, &nr) < 0 ||
        columns_of(&h, added_arg, wide, &added, 1, &na) < 0)
        goto done;
    if (!increasing(width, &removed, "removed") || !increasing(width, &added, "added"))
        goto done;
    writer w;
    if (writer_open(&w, wide, n + nr + na) < 0) {
        writer_drop(&w);
        goto done;
    }
    int missing = wide ? merge(&w, bounds, &removed, &added, width, 1)
                       : merge(&w, bounds, &removed, &added, width, 0);
    if (missing < 0) {
        writer_drop(&w);
        goto done;
    }
    if (missing) {
        writer_drop(&w);
        result = Py_NewRef(Py_None);
    } else {
        result = writer_close(&w);
    }
done:
    release_all(&h);
    return result;
}

/* ``values`` sorted in place: 32-bit values as 32-bit keys by two passes of a radix sort
   (``spare``: room for as many values, which holds the keys twice over), wider ones by
   qsort. -1: no memory. */
static int sort_values(value *values, value *spare, Py_ssize_t n, int wide) {
    if (n < 2)
        return 0;
    if (wide || n < 4096) {
        qsort(values, (size_t)n, sizeof(value), compare);
        return 0;
    }
    Py_ssize_t *counts = PyMem_Malloc(sizeof(Py_ssize_t) << 16);
    if (counts == NULL)
        return -1;
    uint32_t *from = (uint32_t *)spare, *to = from + n;
    for (Py_ssize_t i = 0; i < n; i++)
        from[i] = (uint32_t)values[i].lo;
    for (int shift = 0; shift < 32; shift += 16) {
        memset(counts, 0, sizeof(Py_ssize_t) << 16);
        for (Py_ssize_t i = 0; i < n; i++)
            counts[(from[i] >> shift) & 0xFFFF]++;
        Py_ssize_t total = 0;
        for (Py_ssize_t b = 0; b < (1 << 16); b++) {
            Py_ssize_t here = counts[b];
            counts[b] = total;
            total += here;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            to[counts[(from[i] >> shift) & 0xFFFF]++] = from[i];
        uint32_t *swap = from;
        from = to;
        to = swap;
    }
    PyMem_Free(counts);
    for (Py_ssize_t i = 0; i < n; i++) { /* two passes: the sorted keys are back in ``from`` */
        values[i].hi = 0;
        values[i].lo = from[i];
    }
    return 0;
}

/* Whether ``data`` has a line equal to ``line``. */
static int has_line(const char *data, Py_ssize_t len, const char *line, Py_ssize_t size) {
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *cut = memchr(p, '\n', (size_t)(end - p));
        const char *stop = cut == NULL ? end : cut;
        if (stop - p == size && memcmp(p, line, (size_t)size) == 0)
            return 1;
        if (cut == NULL)
            break;
        p = cut + 1;
    }
    return 0;
}

/* The four octets of ``p`` (``size`` bytes) where it is four decimal numbers of 0 to 255
   without leading zeros, joined by dots: the form inet_pton reads the same way, read
   without a copy. 0 for anything else (inet_pton then decides). */
static inline int dotted_quad(const char *p, Py_ssize_t size, unsigned char *out) {
    int octet = 0, digits = 0, value = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = p[i];
        if (c >= '0' && c <= '9') {
            if (digits == 1 && value == 0)
                return 0; /* a leading zero */
            value = value * 10 + (c - '0');
            if (value > 255)
                return 0;
            digits++;
        } else if (c == '.' && digits > 0 && octet < 3) {
            out[octet++] = (unsigned char)value;
            value = digits = 0;
        } else {
            return 0;
        }
    }
    if (octet != 3 || digits == 0)
        return 0;
    out[3] = (unsigned char)value;
    return 1;
}

/* The address of each line of ``data`` (inet_pton), sorted, without repeats, into a new
   array ``*out``: their count (``*repeated``: whether a value was given twice); -2 where a
   line is not one address and is not a line of ``other`` either (a line in both parts only moved); -1 with an exception set. */
static Py_ssize_t read_lines(int width, const char *data, Py_ssize_t len, const char *other,
                             Py_ssize_t other_len, value **out, int *repeated) {
    int wide = width == 128;
    int family = wide ? AF_INET6 : AF_INET;
    /* room for every line that can be an address: 8 bytes at least with its line end
       ("0.0.0.0"), 3 for IPv6 ("::"); what a page of it is not written to costs nothing */
    size_t room = (size_t)((len + 1) / (wide ? 3 : 8) + 1) * sizeof(value);
    value *values = PyMem_Malloc(room), *spare = PyMem_Malloc(room);
    if (values == NULL || spare == NULL) {
        PyMem_Free(values);
        PyMem_Free(spare);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t n = 0;
    const char *p = data, *end = data + len;
    while (p < end) { /* each line; an empty last one (after the last line end) is none */
        const char *cut = memchr(p, '\n', (size_t)(end - p));
        const char *stop = cut == NULL ? end : cut;
        Py_ssize_t size = stop - p;
        char text[64];
        unsigned char packed[16];
        int ok = size < (Py_ssize_t)sizeof(text) && memchr(p, 0, (size_t)size) == NULL;
        if (ok && !wide && dotted_quad(p, size, packed)) {
            /* the common form, read here: inet_pton reads it the same */
        } else if (ok) {
            memcpy(text, p, (size_t)size);
            text[size] = 0;
            ok = inet_pton(family, text, packed) == 1;
        }
        if (ok) {
            uint64_t hi = 0, lo = 0;
            if (wide)
                for (int b = 0; b < 8; b++)
                    hi = (hi << 8) | packed[b];
            for (int b = wide ? 8 : 0; b < (wide ? 16 : 4); b++)
                lo = (lo << 8) | packed[b];
            values[n].hi = hi;
            values[n].lo = lo;
            n++;
        } else if (!has_line(other, other_len, p, size)) {
            PyMem_Free(values);
            PyMem_Free(spare);
            return -2;
        }
        p = stop + 1;
    }
    int sorted = sort_values(values, spare, n, wide);
    PyMem_Free(spare);
    if (sorted < 0) {
        PyMem_Free(values);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (kept == 0 || !same(values[kept - 1], values[i]))
            values[kept++] = values[i];
    *repeated = kept < n;
    *out = values;
    return kept;
}

/* The words of ``values`` not in ``others`` (both sorted, without repeats). */
static PyObject *words_less(int width, const value *values, Py_ssize_t n, const value *others,
                            Py_ssize_t m) {
    int wide = width == 128;
    writer w;
    if (writer_open(&w, wide, n) < 0) {
        writer_drop(&w);
        return NULL;
    }
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        while (j < m && less(others[j], values[i]))
            j++;
        if (j < m && same(others[j], values[i]))
            continue;
        put_of(&w, 0, w.n++, values[i], wide);
    }
    int per = wide ? 2 : 1;
    Py_ssize_t size = wide ? 8 : 4;
    PyObject *out = PyTuple_New(per);
    if (out == NULL) {
        writer_drop(&w);
        return NULL;
    }
    for (int i = 0; i < per; i++) {
        if (_PyBytes_Resize(&w.words[i], w.n * size) < 0) {
            Py_DECREF(out);
            writer_drop(&w);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, w.words[i]);
        w.words[i] = NULL;
    }
    writer_drop(&w);
    return out;
}

static PyObject *differ_lines(PyObject *self, PyObject *args) {
    (void)self;
    int width;
    Py_buffer gone, came;
    if (!PyArg_ParseTuple(args, "iy*y*:differ_lines", &width, &gone, &came))
        return NULL;
    value *before = NULL, *after = NULL;
    PyObject *removed = NULL, *added = NULL, *result = NULL;
    Py_ssize_t nb = -1, na = -1;
    int repeated = 0;
    if (width != 32 && width != 128) {
        PyErr_Format(PyExc_ValueError, "unsupported width %d", width);
        goto done;
    }
    nb = read_lines(width, gone.buf, gone.len, came.buf, came.len, &before, &repeated);
    if (nb == -2) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (nb < 0)
        goto done;
    na = read_lines(width, came.buf, came.len, gone.buf, gone.len, &after, &repeated);
    if (na == -2) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (na < 0)
        goto done;
    removed = words_less(width, before, nb, after, na);
    if (removed == NULL)
        goto done;
    added = words_less(width, after, na, before, nb);
    if (added == NULL)
        goto done;
    result = PyTuple_Pack(2, removed, added);
done:
    Py_XDECREF(removed);
    Py_XDECREF(added);
    PyMem_Free(before);
    PyMem_Free(after);
    PyBuffer_Release(&gone);
    PyBuffer_Release(&came);
    return result;
}

/* The words of a writer of single values (firsts only), as a tuple of bytes. */
static PyObject *values_close(writer *w) {
    int per = w->wide ? 2 : 1;
    Py_ssize_t size = w->wide ? 8 : 4;
    PyObject *out = PyTuple_New(per);
    if (out == NULL) {
        writer_drop(w);
        return NULL;
    }
    for (int i = 0; i < per; i++) {
        if (_PyBytes_Resize(&w->words[i], w->n * size) < 0) {
            Py_DECREF(out);
            writer_drop(w);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, w->words[i]);
        w->words[i] = NULL;
    }
    writer_drop(w);
    return out;
}

/* The values the spans ``bounds`` hold (checked: in order, apart, not too wide), at most
   ``limit`` + 1 counted; -1 with ValueError for malformed spans. */
static Py_ssize_t held_values(int width, const column *bounds, Py_ssize_t limit) {
    Py_ssize_t total = 0;
    value previous = {0, 0};
    for (Py_ssize_t i = 0; i < bounds[0].n; i++) {
        value first = at(&bounds[0], i), last = at(&bounds[1], i);
        if (too_wide(width, first) || too_wide(width, last) || less(last, first) ||
            (i > 0 && (!less(previous, first) || next_to(previous, first)))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "spans out of order, overlapping or touching");
            return -1;
        }
        previous = last;
        value size = {last.hi - first.hi - (last.lo < first.lo), last.lo - first.lo};
        if (total <= limit) {
            if (size.hi != 0 || size.lo >= (uint64_t)(limit - total + 1))
                total = limit + 1;
            else
                total += (Py_ssize_t)size.lo + 1;
        }
    }
    return total;
}

/* The spans' values not among ``values`` to ``removed``, ``values`` not in the spans to
   ``added``, and the spans of ``values`` to ``spans`` (all sorted). */
ALWAYS void merge_values(const column *bounds, const value *values, Py_ssize_t nv,
                         writer *spans, writer *removed, writer *added, int wide) {
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < bounds[0].n; i++) {
        value first = at_of(&bounds[0], i, wide), last = at_of(&bounds[1], i, wide);
        for (; k < nv && less(values[k], first); k++)
            put_of(added, 0, added->n++, values[k], wide);
        value from = first;
        int rest = 1; /* values of the span left from ``from`` on */
        for (; k < nv && !less(last, values[k]); k++) {
            for (value x = from; less(x, values[k]); x = up(x))
                put_of(removed, 0, removed->n++, x, wide);
            if (same(values[k], last)) {
                rest = 0;
                k++;
                break;
            }
            from = up(values[k]);
        }
        for (value x = from; rest; x = up(x)) {
            put_of(removed, 0, removed->n++, x, wide);
            rest = !same(x, last);
        }
    }
    for (; k < nv; k++)
        put_of(added, 0, added->n++, values[k], wide);
    for (Py_ssize_t v = 0; v < nv; v++)
        emit_of(spans, values[v], values[v], wide);
}

static PyObject *differ_values(PyObject *self, PyObject *args) {
    (void)self;
    int width;
    PyObject *bounds_arg;
    Py_buffer data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "iOy*n:differ_values", &width, &bounds_arg, &data, &count))
        return NULL;
    held h = {.count = 0};
    column bounds[2];
    Py_ssize_t n = -1, nv = 0;
    value *values = NULL;
    writer spans, removed, added;
    memset(&spans, 0, sizeof(spans));
    memset(&removed, 0, sizeof(removed));
    memset(&added, 0, sizeof(added));
    PyObject *result = NULL, *parts[3] = {NULL, NULL, NULL};
    if (width != 32 && width != 128) {
        PyErr_Format(PyExc_ValueError, "unsupported width %d", width);
        goto done;
    }
    if (count < 0 || count > PY_SSIZE_T_MAX / 32) {
        PyErr_SetString(PyExc_ValueError, "a count of values out of range");
        goto done;
    }
    int wide = width == 128;
    if (columns_of(&h, bounds_arg, wide, bounds, 2, &n) < 0)
        goto done;
    Py_ssize_t total = held_values(width, bounds, count);
    if (total < 0)
        goto done;
    int repeated = 0;
    if (total == count)
        nv = read_lines(width, data.buf, data.len, NULL, 0, &values, &repeated);
    if (total != count || nv == -2 || repeated) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (nv < 0)
        goto done;
    if (writer_open(&spans, wide, nv) < 0 || writer_open(&removed, wide, count) < 0 ||
        writer_open(&added, wide, nv) < 0)
        goto done;
    if (wide)
        merge_values(bounds, values, nv, &spans, &removed, &added, 1);
    else
        merge_values(bounds, values, nv, &spans, &removed, &added, 0);
    parts[0] = writer_close(&spans);
    parts[1] = parts[0] == NULL ? NULL : values_close(&removed);
    parts[2] = parts[1] == NULL ? NULL : values_close(&added);
    if (parts[2] != NULL)
        result = PyTuple_Pack(3, parts[0], parts[1], parts[2]);
done:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(parts[i]);
    writer_drop(&spans);
    writer_drop(&removed);
    writer_drop(&added);
    PyMem_Free(values);
    release_all(&h);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"splice_words", splice_words, METH_VARARGS,
     "The spans' words with sorted values taken out and put in (None: one not held, or held)."},
    {"differ_lines", differ_lines, METH_VARARGS,
     "The values gone and those come, sorted and distinct, from the lines that went and came."},
    {"differ_values", differ_values, METH_VARARGS,
     "The spans of a file's values, and the values gone from spans and come (None: not one "
     "address a line, a value twice, or spans not of that many values)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_splice", "The splice of a diffed elements file, compiled.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__splice(void) { return PyModule_Create(&module); }
