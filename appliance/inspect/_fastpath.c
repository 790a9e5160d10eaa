/* The inspection engine's fast path, compiled: the established-flow packet in one call.
 *
 * FastPath(index, flows, idle_timeout, flow_type, anchored_hit).take(ts, data) does what
 * InspectionEngine._fast_tcp and _fast_gtp do (appliance/inspect/engine.py, the twin that
 * runs when this module is not built): for an Ethernet / IPv4 frame without options, not a
 * fragment, carrying TCP or a GTP-U G-PDU with TCP inside, it finds the flow in the engine's
 * index (a dict of flow keys), reads the flow's slots and its direction's rule group, and
 * either accounts for the packet (its counters, state and time, the table's LRU order) and
 * returns True, or returns False (the full path takes the packet), or the key (bytes) of an
 * IPv4/TCP packet that the index does not hold (embryos and new SYNs are the engine's).
 *
 * Rule groups are read through their attributes (established, not_established, anchored,
 * anchored_probe, prefilters, gates) and plain_for() and fast_gates(), exactly as the twin
 * reads them; an anchored
 * probe is checked here, a group without one through the twin's anchored_hit.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h> /* defines _GNU_SOURCE: memmem */
#include <structmember.h>
#include <stdint.h>
#include <string.h>

static int slot_offsets(PyObject *type, const char *what, const char *const *names, int count,
                        Py_ssize_t *out);

/* Big-endian reads of a header's 16- and 32-bit fields (the caller checked the bounds). */
static inline unsigned int u16(const unsigned char *data, Py_ssize_t at)
{
    return (unsigned int)data[at] << 8 | data[at + 1];
}

static inline uint32_t u32(const unsigned char *data, Py_ssize_t at)
{
    return (uint32_t)data[at] << 24 | (uint32_t)data[at + 1] << 16 | (uint32_t)data[at + 2] << 8
        | data[at + 3];
}

/* A class's traverse, clear and dealloc from the list of the objects it holds. */
#define VISIT_ONE(field) Py_VISIT(self->field);
#define CLEAR_ONE(field) Py_CLEAR(self->field);
#define GC_FUNCTIONS(Type, OBJECTS)                                                        \
    static int Type##_traverse(Type *self, visitproc visit, void *arg)                     \
    {                                                                                      \
        OBJECTS(VISIT_ONE)                                                                 \
        return 0;                                                                          \
    }                                                                                      \
    static int Type##_clear(Type *self)                                                    \
    {                                                                                      \
        OBJECTS(CLEAR_ONE)                                                                 \
        return 0;                                                                          \
    }                                                                                      \
    static void Type##_dealloc(Type *self)                                                 \
    {                                                                                      \
        PyObject_GC_UnTrack(self);                                                         \
        Type##_clear(self);                                                                \
        Py_TYPE(self)->tp_free((PyObject *)self);                                          \
    }

/* A class of one METH_FASTCALL method, Cls_method, made by Cls_init, its objects
 * collected by the functions of GC_FUNCTIONS. */
#define ONE_METHOD_CLASS(Cls, method, method_doc, type_doc)                                  \
    static PyMethodDef Cls##_methods[] = {                                                   \
        {#method, (PyCFunction)(void (*)(void))Cls##_##method, METH_FASTCALL, method_doc},   \
        {NULL, NULL, 0, NULL},                                                               \
    };                                                                                       \
    static PyTypeObject Cls##Type = {                                                        \
        PyVarObject_HEAD_INIT(NULL, 0)                                                       \
        .tp_name = "appliance.inspect._fastpath." #Cls,                                      \
        .tp_basicsize = sizeof(Cls),                                                         \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,                                 \
        .tp_doc = type_doc,                                                                  \
        .tp_new = PyType_GenericNew,                                                         \
        .tp_init = (initproc)Cls##_init,                                                     \
        .tp_dealloc = (destructor)Cls##_dealloc,                                             \
        .tp_traverse = (traverseproc)Cls##_traverse,                                         \
        .tp_clear = (inquiry)Cls##_clear,                                                    \
        .tp_methods = Cls##_methods,                                                         \
    };

/* The place of an object slot at offset in obj (offsets as slot_offsets finds them). */
static inline PyObject **place_of(PyObject *obj, Py_ssize_t offset)
{
    return (PyObject **)((char *)obj + offset);
}

/* Into *place, stealing value (NULL: an error already set, -1). */
static inline int steal(PyObject **place, PyObject *value)
{
    if (value == NULL)
        return -1;
    Py_XSETREF(*place, value);
    return 0;
}

/* An object held from now on in place of what *place held (a new reference to value). */
static inline void keep(PyObject **place, PyObject *value)
{
    Py_INCREF(value);
    Py_XSETREF(*place, value);
}

static inline void keep_x(PyObject **place, PyObject *value)
{
    Py_XINCREF(value);
    Py_XSETREF(*place, value);
}

static const char *const stat_names[2] = {"packets", "fast"};

/* Every slot of a Flow, for a flow made here (flow.Flow.__init__'s values): used only when
 * the class has exactly these slots. */
enum {
    F_APP, F_APP_TRIES, F_BITS, F_ESTABLISHED, F_FAST_C, F_FAST_S, F_FIRST_TS, F_FWD_KEY,
    F_GTP_OK, F_KEY, F_LAST_TS, F_PACKETS_TO_CLIENT, F_PACKETS_TO_SERVER, F_PROTO,
    F_REVERSE_KEY, F_SEL_C, F_SEL_S, F_SIZES, F_STREAMS, F_TCP_STATE, F_TOUCHED, F_COUNT
};

static const char *const flow_names[F_COUNT] = {
    "app",       "app_tries", "bits",     "established", "fast_c",  "fast_s",
    "first_ts",  "fwd_key",   "gtp_ok",   "key",         "last_ts", "packets_to_client",
    "packets_to_server", "proto", "reverse_key", "sel_c", "sel_s", "sizes", "streams",
    "tcp_state", "touched",
};

/* The slots of tlsrecords' _Flow and _Direction, and RECORDS_MAX: tlsrecords.WALK_SHAPE. */
enum { RF_CHANGED, RF_DIRECTIONS, RF_ENCRYPTED, RF_FLOW, RF_SERVER_HANDSHAKE, RF_COUNT };
static const char *const record_flow_names[RF_COUNT] = {
    "changed", "directions", "encrypted", "flow", "server_handshake",
};
enum { RD_CARRY, RD_NEXT, RD_START, RD_UNTIL, RD_COUNT };
static const char *const record_direction_names[RD_COUNT] = {"carry", "next", "start", "until"};

typedef struct {
    PyObject *flow_type, *direction_type; /* borrowed from the shape its holder keeps */
    Py_ssize_t flow_offsets[RF_COUNT], direction_offsets[RD_COUNT];
    long long max_bytes;
} RecordsShape;

#define TCP_SYN_SENT 1
#define TCP_SYN_RECV 2
#define TCP_ESTABLISHED 3

enum {
    S_APP,
    S_ESTABLISHED,
    S_FAST_C,
    S_FAST_S,
    S_FWD_KEY,
    S_GTP_OK,
    S_KEY,
    S_LAST_TS,
    S_PACKETS_TO_CLIENT,
    S_PACKETS_TO_SERVER,
    S_SIZES,
    S_STREAMS,
    S_TCP_STATE,
    S_TOUCHED,
    S_COUNT
};

static const char *slot_names[S_COUNT] = {
    "app",       "established", "fast_c",  "fast_s",
    "fwd_key",   "gtp_ok",      "key",     "last_ts",
    "packets_to_client", "packets_to_server", "sizes", "streams", "tcp_state", "touched",
};

/* The slots of a stream direction (stream.StreamDirection) that scan_segment() reads. */
enum { SD_BASE, SD_DATA, SD_FULL, SD_PENDING, SD_SCANNED, SD_WAITING, SD_COUNT };
/* The slots of the Reassembler the fast path keeps the accounts of (stream_grew, fin_ends) */
enum { RA_HELD, RA_MAX_BYTES, RA_STREAMS, RA_COUNT };
static const char *reassembler_slot_names[RA_COUNT] = {"held", "max_bytes", "_streams"};

static const char *stream_slot_names[SD_COUNT] = {"base", "data", "full",
                                                  "pending", "scanned", "waiting"};

/* What the fast path reads of a rule group, read once per group (a group's tables are
 * made with it and never replaced: its flag tables grow in place). */
typedef struct {
    PyObject *group; /* a strong reference: the entry's key */
    PyObject *packed; /* group.packed: packed_gates' tables, by established */
    PyObject *probe;
    PyObject *scans; /* group.payload_scans */
    int anchored, prefilters, reads_payload;
} GroupInfo;

#define GROUP_CACHE 64
#define KEY_BITS 11
#define KEY_CACHE (1 << KEY_BITS) /* flow keys kept for the index's look-ups (flow_key()) */

typedef struct {
    PyObject_HEAD
    PyObject *index;        /* dict: flow key -> Flow */
    PyObject *flows;        /* OrderedDict: client key -> Flow or embryo (LRU order) */
    PyObject *flow_type;    /* the Flow class (objects of exactly this type are read) */
    PyObject *anchored_hit; /* the twin's _anchored_hit(group, data, start, end, established) */
    PyObject *layer_type;   /* decode.Layer, for lookup() */
    PyObject *lookup;       /* the twin's FlowTable.lookup(layer, ts) */
    /* the engine's _scan_segment(flow, to_server, group, data, ip, start, end): a data
     * segment of a direction whose selection says it may be scanned (NULL: none is) */
    PyObject *segment;
    PyObject *full; /* the engine's _full(ts, data, linktype): what process() leaves (NULL) */
    PyObject *outer; /* the engine's _scan_outer(group, data, end): a G-PDU's outer scan */
    /* what scan_segment() reads and calls: the engine's Reassembler (or None), the
     * StreamDirection class, stream.head_clear; NULL: the engine's _scan_segment does it */
    PyObject *reassembler, *stream_type, *head_clear;
    /* TlsRecords.walk(flow, to_server, data, ip, start, end) of a TLS flow's data segment:
     * true when the flow turned encrypted; then the engine's _tls_taken(flow) once the
     * segment is taken (it regroups the flow); NULL: none. tls_flows: the flows followed,
     * by key (TlsRecords._flows): a flow not in it is not walked */
    PyObject *tls_walk, *tls_taken, *tls_flows;
    /* the engine's HttpSplit (its pending messages), or None (no splitter); NULL: an HTTP
     * flow's data segment is the engine's _scan_segment's */
    PyObject *http;
    /* tlsrecords.WALK_SHAPE, read: the walk done here (records_walk) unless NULL */
    PyObject *tls_shape_held;
    RecordsShape tls_shape;
    Py_ssize_t depth; /* the reassembler's */
    double idle_timeout;
    Py_ssize_t offsets[S_COUNT];
    Py_ssize_t stream_offsets[SD_COUNT]; /* stream_type's slots */
    Py_ssize_t reassembler_offsets[RA_COUNT]; /* the reassembler's slots */
    Py_ssize_t layer_offsets[6];
    /* the new-flow path (new_flow_path()): NULL until the engine hands it over */
    PyObject *table;     /* FlowTable */
    PyObject *stats;     /* the engine's Stats */
    size_t counted[2];   /* Stats.packets and .fast not added to it yet (flush_stats()) */
    PyObject *hellos;    /* the engine's pending ClientHellos, by flow key */
    PyObject *plans;     /* kind of a new flow's first segment -> plan */
    PyObject *plan_of;   /* the engine's _flow_plan(kind, data) */
    PyObject *alerting;  /* list: the rules that alert on each plan's segment */
    PyObject *scan;      /* PortScan.syn(ts, src, dport), or None */
    PyObject *flood;     /* SynFlood.syn(ts, src, dst), or None */
    PyObject *fire;      /* the engine's _flow_fire(ts, data, key, plan) */
    PyObject *detected;  /* the engine's _flow_alerts(ts, data, key, fired, scan, flood) */
    PyObject *counters;  /* (ThresholdState, PortScan or None, SynFlood or None), or NULL:
                          * counted here (opening_fire), else by fire */
    PyObject *no_alerts; /* what a packet without alerts gives */
    PyObject *addr_bits; /* tuple: the IPv4 address segments' bit sets */
    PyObject *port_bits; /* tuple: the port segments' bit sets */
    uint32_t *addr_starts;
    uint32_t *port_starts;
    Py_ssize_t addr_count, port_count;
    int flow_on; /* a new flow's first segment (without payload) takes the new-flow path */
    /* the GTP-U checks' UE pools, IPv4 (first, last) pairs: a G-PDU's inner flow opens on
     * the new-flow path only if its source or destination is in one; pools_any: no pools
     * (or no GTP-U checks), every one may */
    uint32_t *pools;
    Py_ssize_t pool_count;
    int pools_any;
    Py_ssize_t stat_offsets[2]; /* Stats.packets, Stats.fast: counted by take() */
    GroupInfo groups[GROUP_CACHE]; /* by the group's address */
    PyObject **keys; /* KEY_CACHE flow keys made before (flow_key()), NULL until the first */
    PyObject *made_plans;          /* the engine's _plans: what an embryo hatches into */
    int sizes; /* stream sizes are followed: a hatched flow starts them, fast_tcp counts */
    int make_flows;                /* flows are made here (flow_offsets) */
    Py_ssize_t flow_offsets[F_COUNT];
} FastPath;

enum { LK_PROTO, LK_SRC, LK_DST, LK_SPORT, LK_DPORT, LK_FLAGS };
static const char *lookup_names[6] = {"proto", "src", "dst", "sport", "dport", "flags"};

static PyObject *one, *zero, *six, *empty;
static PyObject *str_embryos, *str_next_sweep, *str_sweep, *str_max_flows, *str_evict,
    *str_expired, *str_hatch, *str_full;
static PyObject *str_anchored, *str_anchored_probe, *str_prefilters, *str_move_to_end, *str_gtp,
    *str_packed, *str_packed_gates;

static PyObject *str_payload_scans, *str_reads_payload, *str_pending, *str_data, *str_scanned,
    *str_grew, *str_errors, *str_candidates, *str_depth, *str_patterns, *str_buffer,
    *str__current, *str__request;

/* ---- a Flow's slots ------------------------------------------------------------------ */

static inline PyObject *slot(FastPath *fp, PyObject *flow, int which)
{
    return *place_of(flow, fp->offsets[which]);
}

static inline void set_slot(FastPath *fp, PyObject *flow, int which, PyObject *value)
{
    keep(place_of(flow, fp->offsets[which]), value);
}

/* A stream direction's slot (borrowed; NULL: unset), and its setting. */
static inline PyObject *stream_slot(FastPath *fp, PyObject *stream, int which)
{
    return *place_of(stream, fp->stream_offsets[which]);
}

static inline void set_stream_slot(FastPath *fp, PyObject *stream, int which, PyObject *value)
{
    keep(place_of(stream, fp->stream_offsets[which]), value);
}

/* value + 1 (a new reference, NULL on error): an int's without the generic addition. */
static inline PyObject *plus_one(PyObject *value)
{
    if (PyLong_CheckExact(value)) {
        int overflow;
        long number = PyLong_AsLongAndOverflow(value, &overflow);
        if (!overflow && number < LONG_MAX)
            return PyLong_FromLong(number + 1);
    }
    return PyNumber_Add(value, one);
}

/* Whether a str is the ASCII name of ``size`` characters: its length first, so that an
 * application protocol's name of another length costs no comparison. */
static inline int str_is(PyObject *text, const char *name, Py_ssize_t size)
{
    return PyUnicode_GET_LENGTH(text) == size && PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND
           && memcmp(PyUnicode_1BYTE_DATA(text), name, (size_t)size) == 0;
}

/* A stream's bytearray resized to ``size`` bytes. Where it must grow, its allocation grows
 * by half again (up to the depth, the most a stream holds), so that a stream appended to a
 * segment at a time is reallocated, and copied, a few times instead of at every other
 * segment. (A bytearray shrunk to half its allocation or more keeps it.) 0, -1. */
static int stream_resize(PyObject *held, Py_ssize_t size, Py_ssize_t depth)
{
    if (size >= ((PyByteArrayObject *)held)->ob_alloc) {
        Py_ssize_t room = size + (size >> 1);
        if (room > depth)
            room = depth;
        if (room > size && PyByteArray_Resize(held, room) < 0)
            return -1;
    }
    return PyByteArray_Resize(held, size);
}

/* A counter slot plus one; -1 on error. */
static int increment(FastPath *fp, PyObject *flow, int which)
{
    PyObject *old = slot(fp, flow, which);
    PyObject *new;
    if (old == NULL) {
        PyErr_SetString(PyExc_AttributeError, slot_names[which]);
        return -1;
    }
    new = plus_one(old);
    if (new == NULL)
        return -1;
    set_slot(fp, flow, which, new);
    Py_DECREF(new);
    return 0;
}

/* The counts since the last flush added to the Stats' slots; 0, -1 (the counts kept). The
 * engine's Stats.packets and .fast are counted here (counted[0], counted[1]) until then
 * (flush_stats(), which the engine's stats calls before it is read): an int object made
 * for each packet cost more than the rest of a bulk segment's way. */
static int flush_counts(FastPath *fp)
{
    int which;
    for (which = 0; which < 2; which++) {
        PyObject **place, *count, *sum;
        if (!fp->counted[which])
            continue;
        place = place_of(fp->stats, fp->stat_offsets[which]);
        if (*place == NULL) {
            PyErr_SetString(PyExc_AttributeError, stat_names[which]);
            return -1;
        }
        count = PyLong_FromSize_t(fp->counted[which]);
        sum = count == NULL ? NULL : PyNumber_Add(*place, count);
        Py_XDECREF(count);
        if (sum == NULL)
            return -1;
        Py_SETREF(*place, sum);
        fp->counted[which] = 0;
    }
    return 0;
}

/* A float slot as a double; -1.0 with an error set on failure (check PyErr_Occurred). */
static inline double slot_double(FastPath *fp, PyObject *flow, int which)
{
    PyObject *value = slot(fp, flow, which);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, slot_names[which]);
        return -1.0;
    }
    if (PyFloat_CheckExact(value))
        return PyFloat_AS_DOUBLE(value);
    return PyFloat_AsDouble(value);
}

/* key == flow.fwd_key (None when both directions share a key: never equal). */
static inline int is_forward(FastPath *fp, PyObject *flow, const char *key, Py_ssize_t size)
{
    PyObject *fwd = slot(fp, flow, S_FWD_KEY);
    return fwd != NULL && PyBytes_CheckExact(fwd) && PyBytes_GET_SIZE(fwd) == size
        && memcmp(PyBytes_AS_STRING(fwd), key, (size_t)size) == 0;
}

/* ---- rule groups --------------------------------------------------------------------- */

static void group_forget(GroupInfo *info)
{
    Py_CLEAR(info->group);
    Py_CLEAR(info->packed);
    Py_CLEAR(info->probe);
    Py_CLEAR(info->scans);
}

/* The group's entry in the cache (read on a miss); NULL on error. */
static GroupInfo *group_info(FastPath *fp, PyObject *group)
{
    GroupInfo *info = &fp->groups[((uintptr_t)group >> 4) % GROUP_CACHE];
    PyObject *packed, *probe, *scans, *value;
    int anchored, prefilters, reads_payload;
    if (info->group == group)
        return info;
    packed = PyObject_GetAttr(group, str_packed);
    probe = PyObject_GetAttr(group, str_anchored_probe);
    scans = PyObject_GetAttr(group, str_payload_scans);
    if (packed == NULL || probe == NULL || scans == NULL)
        goto error;
    if (!PyTuple_CheckExact(packed) || PyTuple_GET_SIZE(packed) != 2
        || !PyDict_CheckExact(PyTuple_GET_ITEM(packed, 0))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(packed, 1))) {
        PyErr_SetString(PyExc_TypeError, "Group.packed: two dicts");
        goto error;
    }
    value = PyObject_GetAttr(group, str_anchored);
    anchored = value == NULL ? -1 : PyObject_IsTrue(value);
    Py_XDECREF(value);
    if (anchored < 0)
        goto error;
    value = PyObject_GetAttr(group, str_prefilters);
    prefilters = value == NULL ? -1 : PyObject_IsTrue(value);
    Py_XDECREF(value);
    if (prefilters < 0)
        goto error;
    value = PyObject_GetAttr(group, str_reads_payload);
    reads_payload = value == NULL ? -1 : PyObject_IsTrue(value);
    Py_XDECREF(value);
    if (reads_payload < 0)
        goto error;
    group_forget(info);
    Py_INCREF(group);
    info->group = group;
    info->packed = packed;
    info->probe = probe;
    info->anchored = anchored;
    info->prefilters = prefilters;
    info->scans = scans;
    info->reads_payload = reads_payload;
    return info;
error:
    Py_XDECREF(packed);
    Py_XDECREF(probe);
    Py_XDECREF(scans);
    return NULL;
}

/* A header field of the IPv4 packet at data[ip:] (a header of 20 bytes, then TCP for codes 5
 * to 7), by its code in fields.SEGMENT_FIELDS; -1 for another code. */
static int64_t segment_field(long code, const unsigned char *data, Py_ssize_t ip)
{
    switch (code) {
    case 0: return data[ip + 8];
    case 1: return data[ip + 1];
    case 2: return u16(data, ip + 4);
    case 3: return data[ip + 6] & 0xE0u;
    case 4: return u16(data, ip + 6) & 0x1FFFu;
    case 5: return u32(data, ip + 24);
    case 6: return u32(data, ip + 28);
    case 7: return u16(data, ip + 34);
    default: return -1;
    }
}

/* A flags test (fragbits) of a field: its bits, by the modifier's code (0 exactly, 1 any
 * of them, 2 all of them and maybe more, 3 not all of them). */
static inline int bits_hold(int64_t number, int64_t bits, int64_t modifier)
{
    if (modifier == 1)
        return (number & bits) != 0;
    if (modifier == 2)
        return (number & bits) == bits;
    if (modifier == 3)
        return (number & bits) != bits;
    return number == bits;
}

/* match.gates_clear of gates packed by match.pack_gates (bytes of 64-bit words; per gate
 * its tests' count, its sizes' low and high, then per test its field's code, kind, low or
 * bits, high or modifier, negated): whether the IPv4 packet at data[ip:] (a header of 20
 * bytes, then TCP; at least 40 bytes), with size bytes of payload, is outside every gate.
 * 1, 0, -1 on error. */
/* One header test of 5 words (field's code, kind, low or bits, high or modifier, negated) of
 * the IPv4 packet at data[ip:]: 1 holds, 0, -1 not of the shape. */
static int word_test_holds(const int64_t *word, const unsigned char *data, Py_ssize_t ip)
{
    int64_t number = segment_field((long)word[0], data, ip);
    if (number < 0 || word[1] < 0 || word[1] > 1)
        return -1;
    return word[1] == 0 ? (word[2] <= number && number <= word[3]) != (word[4] != 0)
                        : bits_hold(number, word[2], word[3]);
}

static int gates_clear(PyObject *packed, const unsigned char *data, Py_ssize_t ip,
                       Py_ssize_t size)
{
    const int64_t *word, *last;
    Py_ssize_t length;
    if (!PyBytes_CheckExact(packed) || (length = PyBytes_GET_SIZE(packed)) % 8)
        goto shape;
    word = (const int64_t *)(const void *)PyBytes_AS_STRING(packed);
    last = word + length / 8;
    while (word < last) {
        int64_t count, i;
        int holds;
        if (last - word < 3 || (count = word[0]) < 0 || (last - word - 3) / 5 < count)
            goto shape;
        holds = word[1] <= size && size <= word[2];
        word += 3;
        for (i = 0; i < count; i++, word += 5) {
            int test = word_test_holds(word, data, ip);
            if (test < 0)
                goto shape;
            holds = holds && test;
        }
        if (holds)
            return 0;
    }
    return 1;
shape:
    PyErr_SetString(PyExc_TypeError, "packed gates: 64-bit words");
    return -1;
}

/* engine._gated: whether the group's plain rules for these flags (-1: not TCP) and flow
 * state can match the IPv4 packet at data[ip:], with size bytes of payload, only inside a
 * gate of theirs, and the packet is outside all of them: 1 (none, or all gates clear), 0,
 * -1 on error. The gates are read as group.packed_gates gives them (packed, or None: a
 * rule without a gate). */
static int group_gated(GroupInfo *info, long flags, int established, const unsigned char *data,
                       Py_ssize_t ip, Py_ssize_t size)
{
    PyObject *key, *packed;
    int result;
    key = PyLong_FromLong(flags);
    if (key == NULL)
        return -1;
    packed = PyDict_GetItemWithError(PyTuple_GET_ITEM(info->packed, established ? 1 : 0), key);
    if (packed != NULL)
        Py_INCREF(packed);
    else if (!PyErr_Occurred())
        packed = PyObject_CallMethodObjArgs(info->group, str_packed_gates, key,
                                            established ? Py_True : Py_False, NULL);
    Py_DECREF(key);
    if (packed == NULL)
        return -1;
    if (packed == Py_None) {
        Py_DECREF(packed);
        return 0;
    }
    result = gates_clear(packed, data, ip, size);
    Py_DECREF(packed);
    return result;
}

/* bytes.find(pattern, lo, hi) >= 0 on data of n bytes (lo, hi >= 0). */
static inline int found_in(const unsigned char *data, Py_ssize_t n, PyObject *pattern,
                           Py_ssize_t lo, Py_ssize_t hi)
{
    Py_ssize_t m = PyBytes_GET_SIZE(pattern);
    if (hi > n)
        hi = n;
    if (hi - lo < m)
        return 0;
    if (m == 0)
        return 1;
    return memmem(data + lo, (size_t)(hi - lo), PyBytes_AS_STRING(pattern), (size_t)m) != NULL;
}

/* A probe's checks, in place: 1 (all hold), 0, or -2 when they are not in the shape
 * expected (the twin decides). */
static int probe_holds(PyObject *checks, const unsigned char *data, Py_ssize_t n,
                       Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t i, count;
    if (!PyTuple_Check(checks))
        return -2;
    count = PyTuple_GET_SIZE(checks);
    for (i = 0; i < count; i++) {
        PyObject *check = PyTuple_GET_ITEM(checks, i);
        PyObject *pattern, *negated;
        Py_ssize_t offset, limit, stop;
        int found;
        if (!PyTuple_Check(check) || PyTuple_GET_SIZE(check) != 4)
            return -2;
        pattern = PyTuple_GET_ITEM(check, 2);
        negated = PyTuple_GET_ITEM(check, 3);
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(check, 0))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(check, 1)) || !PyBytes_CheckExact(pattern)
            || !PyBool_Check(negated))
            return -2;
        offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(check, 0));
        limit = PyLong_AsSsize_t(PyTuple_GET_ITEM(check, 1));
        if ((offset == -1 || limit == -1) && PyErr_Occurred()) {
            PyErr_Clear();
            return -2;
        }
        if (offset < 0 || limit < 0)
            return -2;
        stop = start + limit;
        found = found_in(data, n, pattern, start + offset, stop < end ? stop : end);
        if (found == (negated == Py_True))
            return 0;
    }
    return 1;
}

/* _anchored_hit(group, data, start, end, established): 1, 0 or -1 on error (probe: the
 * group's anchored_probe). */
static PyObject *str_anchored_fast, *str_anchor_index, *str_placed;

/* Whether needle occurs in data[lo:hi] (hi bounded by n), ASCII letters of data folded. */
static int folded_in(const unsigned char *data, Py_ssize_t n, PyObject *needle, Py_ssize_t lo,
                     Py_ssize_t hi)
{
    const unsigned char *want = (const unsigned char *)PyBytes_AS_STRING(needle);
    Py_ssize_t m = PyBytes_GET_SIZE(needle), at, j;
    if (hi > n)
        hi = n;
    if (lo < 0)
        lo = 0;
    for (at = lo; at + m <= hi; at++) {
        for (j = 0; j < m; j++) {
            unsigned char c = data[at + j];
            if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != want[j])
                break;
        }
        if (j == m)
            return 1;
    }
    return 0;
}

static PyObject *index_placed(PyObject *index, const unsigned char *text, Py_ssize_t n,
                              PyObject *skip, int first);

/* Whether no anchored rule of the group has its fast pattern in its place in data[start:end]
 * (stream.placed finds none: then the twin's _anchored_hit is false): 1 none, 0 one has or
 * the group's anchored_fast is not in the shape expected, -1 error. */
static int none_placed(PyObject *group, PyObject *bytes, Py_ssize_t start, Py_ssize_t end)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes) + start;
    PyObject *fast, *index = PyObject_GetAttr(group, str_anchor_index);
    Py_ssize_t i, count, n = end - start;
    int result = 1;
    if (index == NULL)
        return -1;
    if (index != Py_None) { /* a large group's: its AnchorIndex finds them in one scan */
        PyObject *found = NULL;
        if (start >= 0 && end <= PyBytes_GET_SIZE(bytes) && n >= 0)
            found = index_placed(index, data, n, NULL, 1);
        if (found == NULL && !PyErr_Occurred())
            found = PyObject_CallMethod(index, "placed_in", "Onn", bytes, start, end);
        Py_DECREF(index);
        if (found == NULL)
            return -1;
        result = PyObject_IsTrue(found);
        Py_DECREF(found);
        return result < 0 ? -1 : !result;
    }
    Py_DECREF(index);
    fast = PyObject_GetAttr(group, str_anchored_fast);
    if (fast == NULL)
        return -1;
    if (!PyList_CheckExact(fast) || start < 0 || end > PyBytes_GET_SIZE(bytes) || n < 0) {
        Py_DECREF(fast);
        return 0;
    }
    count = PyList_GET_SIZE(fast);
    for (i = 0; i < count && result == 1; i++) {
        PyObject *entry = PyList_GET_ITEM(fast, i), *needle, *nocase;
        Py_ssize_t low, high;
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5) {
            result = 0;
            break;
        }
        needle = PyTuple_GET_ITEM(entry, 1);
        nocase = PyTuple_GET_ITEM(entry, 4);
        low = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        high = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
        if ((low == -1 || high == -1) && PyErr_Occurred()) {
            result = -1;
            break;
        }
        if (!PyBytes_CheckExact(needle) || !PyBool_Check(nocase) || low < 0 || high < 0) {
            result = 0;
            break;
        }
        if (nocase == Py_True ? folded_in(data, n, needle, low, high)
                              : found_in(data, n, needle, low, high))
            result = 0;
    }
    Py_DECREF(fast);
    return result;
}

static int anchored_hit(FastPath *fp, PyObject *group, PyObject *probe, PyObject *bytes,
                        Py_ssize_t start, Py_ssize_t end, int established)
{
    Py_ssize_t i, count;
    int result = 0;
    Py_INCREF(probe);
    if (!PyList_CheckExact(probe))
        goto twin;
    count = PyList_GET_SIZE(probe);
    for (i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(probe, i);
        PyObject *want;
        int holds;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
            goto twin;
        want = PyTuple_GET_ITEM(item, 0);
        if (want != Py_None) {
            if (!PyBool_Check(want))
                goto twin;
            if ((want == Py_True) != established)
                continue;
        }
        holds = probe_holds(PyTuple_GET_ITEM(item, 1),
                            (const unsigned char *)PyBytes_AS_STRING(bytes),
                            PyBytes_GET_SIZE(bytes), start, end);
        if (holds == -2)
            goto twin;
        if (holds) {
            result = 1;
            break;
        }
    }
    Py_DECREF(probe);
    return result;
twin:
    Py_DECREF(probe);
    {
        PyObject *found;
        result = none_placed(group, bytes, start, end);
        if (result != 0)
            return result < 0 ? -1 : 0; /* no rule placed: none may match */
        found = PyObject_CallFunction(fp->anchored_hit, "OOnnO", group, bytes, start,
                                                end, established ? Py_True : Py_False);
        if (found == NULL)
            return -1;
        result = PyObject_IsTrue(found);
        Py_DECREF(found);
        return result;
    }
}

/* ---- Patterns: the prefilters' exact multi-pattern scan ----------------------------- */

/* Patterns(patterns, fold, rules=None, join=None).scan(buffer, start=0, end=None) answers
 * which of the patterns occur in buffer[start:end] (a tuple of their indices, ascending;
 * None when none does), as `pattern in buffer.lower()` answers for each when fold (ASCII
 * letters only, as bytes.lower folds them), `pattern in buffer` when not. The buffer is
 * read in place (any object with the buffer protocol), one pass, with no object made but
 * the answer.
 *
 * The patterns are an Aho-Corasick automaton whose states are numbered breadth first, so a
 * state's children are consecutive states: a state holds its first child, its number of
 * children, the byte that leads to it, its failure state, the nearest state on its
 * failure chain where a pattern ends, and the last step taken from it with its byte (a run
 * of one byte then costs one comparison a byte): 24 bytes a state, the root's 256
 * transitions a table. While the automaton is at its root, the scan skips every position
 * whose two bytes start no pattern, read in a bitmap of the patterns' first two bytes
 * (hashed into 512 to 65,536 bits, by the number of patterns); where few bytes start a
 * pattern (STARTS_FEW), it first skips the bytes none starts with, one look-up a byte. A
 * pattern found is marked with the scan's number: the output chain of a state is followed
 * until a pattern found before (whose own chain was followed then), so a scan costs at
 * most its length plus the number of patterns, whatever they are (a run of zeros against
 * patterns of zeros, many patterns of one prefix, patterns of one byte); it stops once
 * every pattern is found.
 *
 * With rules (a list: the rules of each pattern) and join (the rules of several patterns
 * found, from the tuple of their indices), candidates(data) is Prefilter.candidates for a
 * prefilter of the packet payload: the rules of the patterns found (a pattern's own list
 * when one is found, else join's answer, kept by tuple of indices up to JOINED_MAX), with
 * the last buffer scanned and whether nothing was found, for none_in(data). */

#define JOINED_MAX 4096
/* Up to this many distinct bytes starting a pattern, the scan at the root skips on them
 * first: one look-up a byte (29 patterns of words over a segment of zeros: 0.5 ns a byte,
 * 1.2 to 1.6 through the pairs' bitmap alone). */
#define STARTS_FEW 96
/* Up to this many patterns, each with a byte that case folding leaves alone, are looked for
 * one by one with memchr on their least common such byte (a single pattern over a kilobyte
 * of binary payload: no byte of it to look at twice), as long as what is compared stays
 * within twice the buffer; past that, the automaton scans the buffer. */
#define FEW 8

typedef struct {
    PyObject_HEAD
    int fold;
    int32_t count;      /* patterns */
    int32_t states;     /* the automaton's states (the root is 0) */
    int32_t *first;     /* a state's first child (its children are consecutive states) */
    uint16_t *children; /* a state's number of children */
    uint8_t *label;     /* the byte leading to a state */
    int32_t *fail;      /* a state's failure state */
    int32_t *out;       /* the first pattern ending at a state, -1 */
    int32_t *link;      /* the nearest state down a state's failure chain with out, 0 */
    int32_t *next;      /* a state's last step taken (failures followed), -1: none yet */
    uint8_t *on;        /* the byte of that step */
    int32_t *same;      /* a pattern's next of the same bytes, -1 */
    uint32_t *stamp;    /* the scan that last found a pattern */
    int32_t *found;     /* the patterns found by the scan going on */
    uint8_t *pairs;     /* the bitmap of first two bytes (hashed) */
    uint8_t *few;       /* up to FEW patterns, each with a byte to look for: their bytes */
    int32_t few_start[FEW], few_size[FEW], few_anchor[FEW];
    uint32_t pair_shift;
    uint32_t scans;
    int32_t root[256];
    uint8_t starts[256]; /* a buffer byte (not folded) that some pattern starts with */
    int few_starts;      /* few bytes start a pattern: the scan skips on starts first */
    Py_ssize_t memory;
    PyObject *rules, *join, *joined, *last;
    int last_none;
    /* an application buffer's values recur: the candidates of the last memo_entries
     * distinct ones of at most memo_bytes bytes, by value (NULL: none kept) */
    PyObject *memo;
    Py_ssize_t memo_entries, memo_bytes;
} Patterns;

static PyTypeObject PatternsType;

static uint8_t fold_map[256], same_map[256];

static inline uint32_t pair_hash(const Patterns *pt, unsigned int a, unsigned int b)
{
    return (uint32_t)(((a << 8 | b) * 40503u) & 0xFFFFu) >> pt->pair_shift;
}

static inline int pair_set(const Patterns *pt, unsigned int a, unsigned int b)
{
    uint32_t h = pair_hash(pt, a, b);
    return pt->pairs[h >> 3] >> (h & 7) & 1;
}

/* The child of state (not the root) on byte, -1 none. */
static inline int32_t child_of(const Patterns *pt, int32_t state, uint8_t byte)
{
    int32_t first = pt->first[state];
    const uint8_t *at = memchr(pt->label + first, byte, pt->children[state]);
    return at == NULL ? -1 : first + (int32_t)(at - (pt->label + first));
}

/* The state after byte from state, failures followed. */
static inline int32_t step_slow(const Patterns *pt, int32_t state, uint8_t byte)
{
    for (;;) {
        int32_t next;
        if (state == 0)
            return pt->root[byte];
        next = child_of(pt, state, byte);
        if (next >= 0)
            return next;
        state = pt->fail[state];
    }
}

/* step_slow, its last answer kept by each state (a run of one byte, as a payload of zeros,
 * keeps the automaton in one state: one comparison a byte). */
static inline int32_t step(Patterns *pt, int32_t state, uint8_t byte)
{
    int32_t next = pt->next[state];
    if (next >= 0 && pt->on[state] == byte)
        return next;
    next = step_slow(pt, state, byte);
    pt->next[state] = next;
    pt->on[state] = byte;
    return next;
}

/* The patterns ending at state not found yet in this scan, marked and listed. */
static inline void report(Patterns *pt, int32_t state, int32_t *nfound)
{
    if (pt->out[state] < 0)
        state = pt->link[state];
    while (state) {
        int32_t p = pt->out[state];
        if (pt->stamp[p] == pt->scans)
            return; /* found before: so were the rest of its chain */
        for (; p >= 0; p = pt->same[p]) {
            pt->stamp[p] = pt->scans;
            pt->found[(*nfound)++] = p;
        }
        state = pt->link[state];
    }
}

/* The number of distinct patterns in data[0:size], listed in pt->found (unsorted); with
 * any, it stops at the first. */
static inline void next_scan(Patterns *pt)
{
    if (++pt->scans == 0) { /* wrapped: no stamp may look current */
        memset(pt->stamp, 0, sizeof(uint32_t) * (size_t)pt->count);
        pt->scans = 1;
    }
}

/* patterns_run for FEW patterns or fewer, each looked for on its own: the number found, or
 * -1 when the bytes compared passed twice the buffer's (nothing kept of it). */
static int32_t few_run(Patterns *pt, const uint8_t *data, Py_ssize_t size, int any)
{
    const uint8_t *map = pt->fold ? fold_map : same_map;
    Py_ssize_t budget = 2 * size + 256;
    int32_t nfound = 0, p, q;
    for (p = 0; p < pt->count; p++) {
        const uint8_t *bytes = pt->few + pt->few_start[p];
        Py_ssize_t length = pt->few_size[p], anchor = pt->few_anchor[p], at = anchor;
        if (pt->stamp[p] == pt->scans)
            continue; /* (a pattern of the same bytes) */
        while (at + length - anchor <= size) {
            Py_ssize_t last = size - length + anchor, start, j = 0; /* the last place */
            const uint8_t *hit = memchr(data + at, bytes[anchor], (size_t)(last + 1 - at));
            if (hit == NULL)
                break;
            at = hit - data;
            start = at - anchor;
            while (j < length && map[data[start + j]] == bytes[j])
                j++;
            budget -= j + 1;
            if (j == length) {
                for (q = p; q >= 0; q = pt->same[q]) {
                    pt->stamp[q] = pt->scans;
                    pt->found[nfound++] = q;
                }
                break;
            }
            if (budget < 0)
                return -1;
            at++;
        }
        if (nfound && any)
            break;
    }
    return nfound;
}

static int32_t patterns_run(Patterns *pt, const uint8_t *data, Py_ssize_t size, int any)
{
    const uint8_t *map = pt->fold ? fold_map : same_map;
    int32_t nfound = 0, state = 0, p;
    Py_ssize_t i = 0;
    next_scan(pt);
    if (pt->few != NULL) {
        nfound = few_run(pt, data, size, any);
        if (nfound >= 0)
            return nfound;
        next_scan(pt); /* (the automaton from the start, nothing marked) */
        nfound = 0;
    }
    for (p = pt->out[0]; p >= 0; p = pt->same[p]) { /* the empty pattern: in every buffer */
        pt->stamp[p] = pt->scans;
        pt->found[nfound++] = p;
    }
    if (nfound && any)
        return nfound;
    while (i < size) {
        if (state == 0) {
            if (pt->few_starts) {
                /* past the bytes no pattern starts with (one look-up a byte), then past
                 * those whose two bytes start none */
                for (;;) {
                    while (i < size && !pt->starts[data[i]])
                        i++;
                    if (i + 1 >= size || pair_set(pt, map[data[i]], map[data[i + 1]]))
                        break;
                    i++;
                }
                if (i >= size)
                    break;
            } else {
                while (i + 1 < size && !pair_set(pt, map[data[i]], map[data[i + 1]]))
                    i++;
            }
            state = pt->root[map[data[i]]];
        } else {
            state = step(pt, state, map[data[i]]);
        }
        i++;
        if (state && (pt->out[state] >= 0 || pt->link[state])) {
            report(pt, state, &nfound);
            if (nfound && any)
                break;
            if (nfound == pt->count)
                break;
        }
    }
    return nfound;
}

static int index_order(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The tuple of the patterns found in data (ascending), or None. */
static PyObject *patterns_found(Patterns *pt, const uint8_t *data, Py_ssize_t size)
{
    int32_t nfound = patterns_run(pt, data, size, 0), k;
    PyObject *found;
    if (nfound == 0)
        Py_RETURN_NONE;
    if (nfound > 1)
        qsort(pt->found, (size_t)nfound, sizeof(int32_t), index_order);
    found = PyTuple_New(nfound);
    if (found == NULL)
        return NULL;
    for (k = 0; k < nfound; k++) {
        PyObject *number = PyLong_FromLong(pt->found[k]);
        if (number == NULL) {
            Py_DECREF(found);
            return NULL;
        }
        PyTuple_SET_ITEM(found, k, number);
    }
    return found;
}

/* Whether a pattern occurs in data[0:size] (1, 0). */
static inline int patterns_any(Patterns *pt, const uint8_t *data, Py_ssize_t size)
{
    return patterns_run(pt, data, size, 1) > 0;
}

/* A buffer's bytes [start:end], clamped as a slice is (positive bounds). 0, -1. */
static int patterns_view(PyObject *buffer, Py_buffer *view, Py_ssize_t *start, Py_ssize_t *end)
{
    if (PyObject_GetBuffer(buffer, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (*start < 0)
        *start = *start + view->len < 0 ? 0 : *start + view->len;
    if (*end < 0)
        *end = *end + view->len < 0 ? 0 : *end + view->len;
    if (*end > view->len)
        *end = view->len;
    if (*start > *end)
        *start = *end;
    return 0;
}

static PyObject *Patterns_scan(Patterns *pt, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"buffer", "start", "end", NULL};
    PyObject *buffer, *found;
    Py_ssize_t start = 0, end = PY_SSIZE_T_MAX;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|nn:scan", names, &buffer, &start, &end))
        return NULL;
    if (patterns_view(buffer, &view, &start, &end) < 0)
        return NULL;
    found = patterns_found(pt, (const uint8_t *)view.buf + start, end - start);
    PyBuffer_Release(&view);
    return found;
}

static PyObject *patterns_fresh(Patterns *pt, PyObject *data);

/* The rules of the patterns found in data (bytes) or None, as Prefilter.candidates; the
 * scan remembered for none_in. A value the memo holds is not scanned again. */
static PyObject *patterns_candidates(Patterns *pt, PyObject *data)
{
    PyObject *found;
    int kept = pt->memo != NULL && PyBytes_CheckExact(data)
        && PyBytes_GET_SIZE(data) <= pt->memo_bytes;
    if (kept) {
        found = PyDict_GetItemWithError(pt->memo, data);
        if (found != NULL) {
            keep(&pt->last, data);
            pt->last_none = found == Py_None;
            return Py_NewRef(found);
        }
        if (PyErr_Occurred())
            return NULL;
    }
    found = patterns_fresh(pt, data);
    if (found != NULL && kept) {
        if (PyDict_GET_SIZE(pt->memo) >= pt->memo_entries)
            PyDict_Clear(pt->memo); /* (kept anew past the bound) */
        if (PyDict_SetItem(pt->memo, data, found) < 0)
            Py_CLEAR(found);
    }
    return found;
}

/* patterns_candidates by a scan. */
static PyObject *patterns_fresh(Patterns *pt, PyObject *data)
{
    const uint8_t *text;
    Py_ssize_t size;
    int32_t nfound, k;
    PyObject *key, *rules;
    Py_buffer view;
    if (pt->rules == NULL || pt->join == NULL || pt->joined == NULL) {
        PyErr_SetString(PyExc_TypeError, "candidates: Patterns made without rules");
        return NULL;
    }
    if (PyBytes_CheckExact(data)) {
        text = (const uint8_t *)PyBytes_AS_STRING(data);
        size = PyBytes_GET_SIZE(data);
        nfound = patterns_run(pt, text, size, 0);
    } else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        nfound = patterns_run(pt, (const uint8_t *)view.buf, view.len, 0);
        PyBuffer_Release(&view);
    }
    keep(&pt->last, data);
    pt->last_none = nfound == 0;
    if (nfound == 0)
        Py_RETURN_NONE;
    if (nfound == 1) {
        rules = PyList_GetItem(pt->rules, pt->found[0]);
        Py_XINCREF(rules);
        return rules;
    }
    qsort(pt->found, (size_t)nfound, sizeof(int32_t), index_order);
    key = PyTuple_New(nfound);
    if (key == NULL)
        return NULL;
    for (k = 0; k < nfound; k++) {
        PyObject *number = PyLong_FromLong(pt->found[k]);
        if (number == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(key, k, number);
    }
    rules = PyDict_GetItemWithError(pt->joined, key);
    if (rules != NULL) {
        Py_INCREF(rules);
    } else if (!PyErr_Occurred()) {
        rules = PyObject_CallOneArg(pt->join, key);
        if (rules != NULL) {
            if (PyDict_GET_SIZE(pt->joined) >= JOINED_MAX)
                PyDict_Clear(pt->joined);
            if (PyDict_SetItem(pt->joined, key, rules) < 0)
                Py_CLEAR(rules);
        }
    }
    Py_DECREF(key);
    return rules;
}

static PyObject *Patterns_candidates(Patterns *pt, PyObject *data)
{
    return patterns_candidates(pt, data);
}

static PyObject *Patterns_none_in(Patterns *pt, PyObject *data)
{
    return PyBool_FromLong(pt->last == data && pt->last_none);
}

static void patterns_free(Patterns *pt)
{
    PyMem_Free(pt->first);
    PyMem_Free(pt->children);
    PyMem_Free(pt->label);
    PyMem_Free(pt->fail);
    PyMem_Free(pt->out);
    PyMem_Free(pt->link);
    PyMem_Free(pt->next);
    PyMem_Free(pt->on);
    PyMem_Free(pt->same);
    PyMem_Free(pt->stamp);
    PyMem_Free(pt->found);
    PyMem_Free(pt->pairs);
    PyMem_Free(pt->few);
    pt->few = NULL;
    pt->first = pt->fail = pt->out = pt->link = pt->same = pt->found = pt->next = NULL;
    pt->children = NULL;
    pt->label = pt->pairs = pt->on = NULL;
    pt->stamp = NULL;
    pt->count = pt->states = 0;
}

typedef struct {
    const uint8_t *bytes;
    Py_ssize_t size;
    int32_t index;
} PatternText;

static int text_order(const void *a, const void *b)
{
    const PatternText *x = a, *y = b;
    Py_ssize_t n = x->size < y->size ? x->size : y->size;
    int c = n ? memcmp(x->bytes, y->bytes, (size_t)n) : 0;
    if (c)
        return c;
    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* How common a byte is in traffic, for the byte a pattern is looked for by (the lower the
 * rarer); 1000: not to be looked for (a letter while folding: two bytes match it). */
static int byte_rank(uint8_t byte, int fold)
{
    if ((byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z'))
        return fold ? 1000 : 40;
    if (byte == 0x00)
        return 100;
    if (byte == 0xff || byte == ' ')
        return 60;
    if (byte == '\r' || byte == '\n' || byte < 0x09)
        return 45;
    if (byte >= '0' && byte <= '9')
        return 35;
    if (byte == '/' || byte == '.' || byte == ':' || byte == '=' || byte == '-')
        return 30;
    if (byte >= 0x80)
        return 10;
    return 20;
}

/* The automaton over the (folded) patterns: a trie built breadth first from the sorted
 * patterns (a state is a run of them sharing its prefix), then the failure links. */
static int patterns_build(Patterns *pt, PatternText *texts, int32_t count, Py_ssize_t total)
{
    int32_t *lo = NULL, *hi = NULL, *depth = NULL;
    int32_t states = 1, s, k, pairs_bits = 512, starting;
    Py_ssize_t most = total + 1, need;
    int result = -1;
    if (most > INT32_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "Patterns: too many bytes");
        return -1;
    }
    qsort(texts, (size_t)count, sizeof(PatternText), text_order);
    pt->first = PyMem_Calloc((size_t)most, sizeof(int32_t));
    pt->children = PyMem_Calloc((size_t)most, sizeof(uint16_t));
    pt->label = PyMem_Calloc((size_t)most, 1);
    pt->fail = PyMem_Calloc((size_t)most, sizeof(int32_t));
    pt->out = PyMem_Malloc((size_t)most * sizeof(int32_t));
    pt->link = PyMem_Calloc((size_t)most, sizeof(int32_t));
    pt->next = PyMem_Malloc((size_t)most * sizeof(int32_t));
    pt->on = PyMem_Calloc((size_t)most, 1);
    pt->same = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(int32_t));
    pt->stamp = PyMem_Calloc((size_t)(count ? count : 1), sizeof(uint32_t));
    pt->found = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(int32_t));
    lo = PyMem_Malloc((size_t)most * sizeof(int32_t));
    hi = PyMem_Malloc((size_t)most * sizeof(int32_t));
    depth = PyMem_Malloc((size_t)most * sizeof(int32_t));
    while (pairs_bits < 65536 && pairs_bits < 64 * count)
        pairs_bits <<= 1;
    pt->pairs = PyMem_Calloc((size_t)pairs_bits / 8, 1);
    if (pt->first == NULL || pt->children == NULL || pt->label == NULL || pt->fail == NULL
        || pt->out == NULL || pt->link == NULL || pt->next == NULL || pt->on == NULL
        || pt->same == NULL || pt->stamp == NULL
        || pt->found == NULL || lo == NULL || hi == NULL || depth == NULL || pt->pairs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memset(pt->next, 0xff, (size_t)most * sizeof(int32_t)); /* -1: no step kept */
    pt->pair_shift = 0;
    while ((65536u >> pt->pair_shift) > (uint32_t)pairs_bits)
        pt->pair_shift++;
    for (k = 0; k < count; k++)
        pt->same[k] = -1;
    lo[0] = 0;
    hi[0] = count;
    depth[0] = 0;
    for (s = 0; s < states; s++) { /* breadth first: the states made are numbered in order */
        int32_t a = lo[s], b = hi[s], d = depth[s], tail = -1;
        pt->out[s] = -1;
        while (a < b && texts[a].size == d) { /* the patterns ending here */
            if (tail < 0)
                pt->out[s] = texts[a].index;
            else
                pt->same[tail] = texts[a].index;
            tail = texts[a].index;
            a++;
        }
        pt->first[s] = states;
        while (a < b) { /* a child a byte */
            uint8_t byte = texts[a].bytes[d];
            int32_t c = a + 1;
            while (c < b && texts[c].bytes[d] == byte)
                c++;
            pt->label[states] = byte;
            lo[states] = a;
            hi[states] = c;
            depth[states] = d + 1;
            pt->children[s]++;
            states++;
            a = c;
        }
    }
    pt->states = states;
    for (k = 0; k < 256; k++)
        pt->root[k] = 0;
    for (k = 0; k < pt->children[0]; k++)
        pt->root[pt->label[pt->first[0] + k]] = pt->first[0] + k;
    starting = 0;
    for (k = 0; k < 256; k++) {
        pt->starts[k] = pt->root[(pt->fold ? fold_map : same_map)[k]] != 0;
        starting += pt->starts[k];
    }
    /* (where most bytes start a pattern, looking at starts first costs more than it saves:
     * 2,000 binary patterns over zeros, 1.9 ns a byte instead of 1.2) */
    pt->few_starts = starting <= STARTS_FEW;
    for (s = 0; s < states; s++) { /* breadth first: a child's failure from its parent's */
        int32_t c;
        for (c = pt->first[s]; c < pt->first[s] + pt->children[s]; c++) {
            int32_t f = s == 0 ? 0 : step_slow(pt, pt->fail[s], pt->label[c]);
            pt->fail[c] = f;
            pt->link[c] = f == 0 ? 0 : pt->out[f] >= 0 ? f : pt->link[f];
        }
    }
    for (k = 0; k < count; k++) { /* the bitmap of first two bytes */
        const PatternText *t = &texts[k];
        unsigned int second;
        if (t->size >= 2) {
            uint32_t h = pair_hash(pt, t->bytes[0], t->bytes[1]);
            pt->pairs[h >> 3] |= (uint8_t)(1u << (h & 7));
        } else if (t->size == 1) {
            for (second = 0; second < 256; second++) {
                uint32_t h = pair_hash(pt, t->bytes[0], second);
                pt->pairs[h >> 3] |= (uint8_t)(1u << (h & 7));
            }
        }
    }
    if (count <= FEW && total <= 4096) { /* each pattern's byte to look for */
        int32_t anchors[FEW], j;
        Py_ssize_t at = 0;
        for (k = 0; k < count; k++) {
            const PatternText *t = &texts[k];
            int best = -1, rank = 1000;
            for (j = 0; j < t->size; j++) {
                int r = byte_rank(t->bytes[j], pt->fold);
                if (r < rank) {
                    rank = r;
                    best = j;
                }
            }
            if (best < 0)
                break; /* the empty pattern, or letters only while folding */
            anchors[k] = best;
        }
        if (k == count && (pt->few = PyMem_Malloc((size_t)(total ? total : 1))) != NULL) {
            for (k = 0; k < count; k++) { /* by index, as few_run reads them */
                const PatternText *t = &texts[k];
                int32_t index = t->index;
                memcpy(pt->few + at, t->bytes, (size_t)t->size);
                pt->few_start[index] = (int32_t)at;
                pt->few_size[index] = (int32_t)t->size;
                pt->few_anchor[index] = anchors[k];
                at += t->size;
            }
        }
    }
    pt->count = count;
    need = (Py_ssize_t)((size_t)states * (5 * sizeof(int32_t) + sizeof(uint16_t) + 2)
                        + (size_t)count * 3 * sizeof(int32_t) + (size_t)pairs_bits / 8
                        + sizeof(pt->root));
    pt->memory = need + (pt->few != NULL ? total : 0);
    result = 0;
    /* the trie's arrays shrunk to the states made */
    if (states < most) {
        void *p;
#define SHRINK(field, type)                                                               \
        p = PyMem_Realloc(pt->field, (size_t)states * sizeof(type));                      \
        if (p != NULL)                                                                     \
            pt->field = p;
        SHRINK(first, int32_t)
        SHRINK(children, uint16_t)
        SHRINK(label, uint8_t)
        SHRINK(fail, int32_t)
        SHRINK(out, int32_t)
        SHRINK(link, int32_t)
        SHRINK(next, int32_t)
        SHRINK(on, uint8_t)
#undef SHRINK
    }
done:
    PyMem_Free(lo);
    PyMem_Free(hi);
    PyMem_Free(depth);
    return result;
}

static int Patterns_init(Patterns *pt, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"patterns", "fold", "rules", "join", "memo", NULL};
    PyObject *patterns, *seq = NULL, *rules = Py_None, *join = Py_None, *held = NULL;
    PyObject *memo = Py_None;
    Py_ssize_t memo_entries = 0, memo_bytes = 0;
    PatternText *texts = NULL;
    int fold, result = -1;
    Py_ssize_t count, k, total = 0;
    uint8_t *copy = NULL, *at;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Op|OOO:Patterns", names, &patterns, &fold,
                                     &rules, &join, &memo))
        return -1;
    if (memo != Py_None
        && (!PyTuple_Check(memo)
            || !PyArg_ParseTuple(memo, "nn:memo", &memo_entries, &memo_bytes)
            || memo_entries < 1 || memo_bytes < 0 || rules == Py_None)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError,
                        "Patterns: memo (entries >= 1, bytes >= 0), with rules, or None");
        return -1;
    }
    if (pt->states) {
        PyErr_SetString(PyExc_TypeError, "Patterns: made once");
        return -1;
    }
    seq = PySequence_Fast(patterns, "Patterns: a sequence of bytes");
    if (seq == NULL)
        return -1;
    count = PySequence_Fast_GET_SIZE(seq);
    if (count > INT32_MAX / 4) {
        PyErr_SetString(PyExc_OverflowError, "Patterns: too many patterns");
        goto done;
    }
    if (rules != Py_None) {
        if (!PyList_CheckExact(rules) || PyList_GET_SIZE(rules) != count
            || !PyCallable_Check(join)) {
            PyErr_SetString(PyExc_TypeError,
                            "Patterns: rules a list of one item a pattern, join callable");
            goto done;
        }
    }
    for (k = 0; k < count; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "Patterns: a pattern is bytes");
            goto done;
        }
        total += PyBytes_GET_SIZE(item);
    }
    texts = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(PatternText));
    copy = PyMem_Malloc((size_t)(total ? total : 1));
    if (texts == NULL || copy == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    at = copy;
    for (k = 0; k < count; k++) { /* folded as the buffers are */
        PyObject *item = PySequence_Fast_GET_ITEM(seq, k);
        const uint8_t *bytes = (const uint8_t *)PyBytes_AS_STRING(item);
        Py_ssize_t size = PyBytes_GET_SIZE(item), j;
        for (j = 0; j < size; j++)
            at[j] = fold ? fold_map[bytes[j]] : bytes[j];
        texts[k].bytes = at;
        texts[k].size = size;
        texts[k].index = (int32_t)k;
        at += size;
    }
    pt->fold = fold;
    if (patterns_build(pt, texts, (int32_t)count, total) < 0) {
        patterns_free(pt);
        goto done;
    }
    if (rules != Py_None) {
        held = PyDict_New();
        if (held == NULL)
            goto done;
        keep(&pt->rules, rules);
        keep(&pt->join, join);
        Py_XSETREF(pt->joined, held);
        if (memo != Py_None) {
            held = PyDict_New();
            if (held == NULL)
                goto done;
            Py_XSETREF(pt->memo, held);
            pt->memo_entries = memo_entries;
            pt->memo_bytes = memo_bytes;
        }
    }
    result = 0;
done:
    PyMem_Free(texts);
    PyMem_Free(copy);
    Py_DECREF(seq);
    return result;
}

#define PATTERNS_OBJECTS(X) X(rules) X(join) X(joined) X(last) X(memo)

static int Patterns_traverse(Patterns *self, visitproc visit, void *arg)
{
    PATTERNS_OBJECTS(VISIT_ONE)
    return 0;
}

static int Patterns_clear(Patterns *self)
{
    PATTERNS_OBJECTS(CLEAR_ONE)
    return 0;
}

static void Patterns_dealloc(Patterns *self)
{
    PyObject_GC_UnTrack(self);
    Patterns_clear(self);
    patterns_free(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Patterns_len(Patterns *pt)
{
    return pt->count;
}

static PyObject *Patterns_memory(Patterns *pt, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(pt->memory);
}

static PyObject *Patterns_states(Patterns *pt, void *closure)
{
    (void)closure;
    return PyLong_FromLong(pt->states);
}

static PyMethodDef Patterns_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))Patterns_scan, METH_VARARGS | METH_KEYWORDS,
     "scan(buffer, start=0, end=None) -> the indices of the patterns in buffer[start:end] "
     "(a tuple, ascending), or None"},
    {"candidates", (PyCFunction)Patterns_candidates, METH_O,
     "candidates(data) -> the rules of the patterns in data, or None (Prefilter.candidates)"},
    {"none_in", (PyCFunction)Patterns_none_in, METH_O,
     "none_in(data) -> whether the last candidates() was of data and found nothing"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Patterns_getset[] = {
    {"memory", (getter)Patterns_memory, NULL, "bytes held by the automaton", NULL},
    {"states", (getter)Patterns_states, NULL, "the automaton's states", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Patterns_sequence = {.sq_length = (lenfunc)Patterns_len};

static PyTypeObject PatternsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appliance.inspect._fastpath.Patterns",
    .tp_basicsize = sizeof(Patterns),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An exact multi-pattern scanner (Aho-Corasick, compact states)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Patterns_init,
    .tp_dealloc = (destructor)Patterns_dealloc,
    .tp_traverse = (traverseproc)Patterns_traverse,
    .tp_clear = (inquiry)Patterns_clear,
    .tp_methods = Patterns_methods,
    .tp_getset = Patterns_getset,
    .tp_as_sequence = &Patterns_sequence,
};

static int truth_of(PyObject *result);

/* ---- TLS records followed: TlsRecords.walk, compiled --------------------------------- */


/* The shape (a tuple: _Flow, _Direction, RECORDS_MAX) read into *rs; -1 with an error set. */
static int records_shape(PyObject *shape, RecordsShape *rs)
{
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 3
        || !PyType_Check(PyTuple_GET_ITEM(shape, 0)) || !PyType_Check(PyTuple_GET_ITEM(shape, 1))
        || !PyLong_CheckExact(PyTuple_GET_ITEM(shape, 2))) {
        PyErr_SetString(PyExc_TypeError, "a TLS records shape: (flow class, direction class, "
                                         "bytes followed at most)");
        return -1;
    }
    rs->flow_type = PyTuple_GET_ITEM(shape, 0);
    rs->direction_type = PyTuple_GET_ITEM(shape, 1);
    rs->max_bytes = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, 2));
    if (rs->max_bytes == -1 && PyErr_Occurred())
        return -1;
    if (slot_offsets(rs->flow_type, "records flow", record_flow_names, RF_COUNT,
                     rs->flow_offsets)
            < 0
        || slot_offsets(rs->direction_type, "records direction", record_direction_names,
                        RD_COUNT, rs->direction_offsets)
               < 0)
        return -1;
    return 0;
}

#define SEQ_MOD(x) ((long long)((uint64_t)(x) & 0xFFFFFFFFull))

/* A slot set to a new int; -1 on error. */
static int put_number(PyObject *obj, Py_ssize_t offset, long long number)
{
    return steal(place_of(obj, offset), PyLong_FromLongLong(number));
}

/* TlsRecords._end: the direction no longer followed; the flow forgotten (under key) once
 * neither is. 0, or -1 on error. */
static int records_end(const RecordsShape *rs, PyObject *followed, PyObject *key, PyObject *state,
                       int to_server)
{
    PyObject *directions = *place_of(state, rs->flow_offsets[RF_DIRECTIONS]);
    if (PyList_SetItem(directions, to_server, Py_NewRef(Py_None)) < 0)
        return -1;
    if (PyList_GET_ITEM(directions, !to_server) == Py_None) {
        PyObject *held = PyDict_GetItemWithError(followed, key);
        if (held == NULL)
            return PyErr_Occurred() ? -1 : 0;
        return PyDict_DelItem(followed, key);
    }
    return 0;
}

/* TlsRecords._read_state for a state of the shape (state.flow is the flow of key, not
 * encrypted): 1 when the flow turned encrypted, 0 when not, -1 on error, -2 when the state
 * is not as expected (nothing changed: the twin is to read the segment). */
static int records_read(const RecordsShape *rs, PyObject *followed, PyObject *key,
                        PyObject *state, int to_server, uint32_t seq, const unsigned char *data,
                        Py_ssize_t start, Py_ssize_t end)
{
    const Py_ssize_t *fo = rs->flow_offsets, *dof = rs->direction_offsets;
    PyObject *directions = *place_of(state, fo[RF_DIRECTIONS]), *direction, *values[RD_COUNT];
    PyObject *joined = NULL, *handshake = *place_of(state, fo[RF_SERVER_HANDSHAKE]);
    long long first, next, until, base, pos, rel, size = end - start;
    Py_ssize_t carry_size, s0 = start, e0 = end;
    const unsigned char *buf = data;
    int i;

    if (directions == NULL || !PyList_CheckExact(directions) || PyList_GET_SIZE(directions) != 2
        || (handshake != Py_True && handshake != Py_False))
        return -2;
    direction = PyList_GET_ITEM(directions, to_server);
    if (direction == Py_None)
        return 0;
    if ((PyObject *)Py_TYPE(direction) != rs->direction_type)
        return -2;
    for (i = 0; i < RD_COUNT; i++) {
        values[i] = *place_of(direction, dof[i]);
        if (values[i] == NULL || (i == RD_CARRY ? !PyBytes_CheckExact(values[i])
                                                : !PyLong_CheckExact(values[i])))
            return -2;
    }
    first = PyLong_AsLongLong(values[RD_START]);
    next = PyLong_AsLongLong(values[RD_NEXT]);
    until = PyLong_AsLongLong(values[RD_UNTIL]);
    if (PyErr_Occurred())
        return -1;
    if (first < 0) { /* the server's first payload */
        first = next = until = seq;
        if (put_number(direction, dof[RD_START], first) < 0
            || put_number(direction, dof[RD_NEXT], next) < 0
            || put_number(direction, dof[RD_UNTIL], until) < 0)
            return -1;
    }
    rel = SEQ_MOD((long long)seq - until);
    if (rel >= 0x80000000LL) {
        long long ahead = SEQ_MOD((long long)seq + size - until);
        if (!(ahead > 0 && ahead < 0x80000000LL))
            return 0; /* all of it seen before: a retransmission */
    }
    if (rel != 0) /* out of order, or overlapping what was seen */
        return records_end(rs, followed, key, state, to_server);
    carry_size = PyBytes_GET_SIZE(values[RD_CARRY]);
    if (carry_size) { /* a header the last segment cut: read with this segment's bytes */
        joined = PyBytes_FromStringAndSize(NULL, carry_size + (Py_ssize_t)size);
        if (joined == NULL)
            return -1;
        memcpy(PyBytes_AS_STRING(joined), PyBytes_AS_STRING(values[RD_CARRY]),
               (size_t)carry_size);
        memcpy(PyBytes_AS_STRING(joined) + carry_size, data + start, (size_t)size);
        buf = (const unsigned char *)PyBytes_AS_STRING(joined);
        s0 = 0;
        e0 = carry_size + (Py_ssize_t)size;
    }
    base = SEQ_MOD((long long)seq - carry_size);
    pos = s0 + SEQ_MOD(next - base); /* where the next header is */
    while (pos + 5 <= e0) {
        unsigned char kind = buf[pos];
        if (kind < 20 || kind > 24 || buf[pos + 1] != 3) {
            Py_XDECREF(joined);
            return records_end(rs, followed, key, state, to_server);
        }
        if (kind == 23 && (*place_of(state, fo[RF_SERVER_HANDSHAKE]) == Py_True || !to_server)) {
            Py_XDECREF(joined);
            keep(place_of(state, fo[RF_ENCRYPTED]), Py_True);
            keep(place_of(state, fo[RF_CHANGED]), Py_True);
            return steal(place_of(state, fo[RF_DIRECTIONS]),
                         Py_BuildValue("[OO]", Py_None, Py_None))
                       < 0
                ? -1
                : 1;
        }
        if (kind == 22 && !to_server)
            keep(place_of(state, fo[RF_SERVER_HANDSHAKE]), Py_True);
        pos += 5 + (long long)u16(buf, (Py_ssize_t)pos + 3);
    }
    until = SEQ_MOD((long long)seq + size);
    if (put_number(direction, dof[RD_UNTIL], until) < 0
        || put_number(direction, dof[RD_NEXT], SEQ_MOD(base + pos - s0)) < 0
        || steal(place_of(direction, dof[RD_CARRY]),
                 PyBytes_FromStringAndSize(pos < e0 ? (const char *)buf + pos : NULL,
                                           pos < e0 ? (Py_ssize_t)(e0 - pos) : 0))
               < 0) {
        Py_XDECREF(joined);
        return -1;
    }
    Py_XDECREF(joined);
    if (SEQ_MOD(until - first) >= rs->max_bytes)
        return records_end(rs, followed, key, state, to_server);
    return 0;
}

/* TlsRecords.walk(flow, to_server, data, ip, start, end) where state (followed[key], found
 * by the caller) is of the shape: 1 (turned encrypted), 0, -1 on error, -2 (the twin's walk
 * is to be called). */
static int records_walk(const RecordsShape *rs, PyObject *followed, PyObject *key,
                        PyObject *state, PyObject *flow, int to_server, const unsigned char *data,
                        Py_ssize_t ip, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *encrypted;
    if ((PyObject *)Py_TYPE(state) != rs->flow_type)
        return -2;
    if (*place_of(state, rs->flow_offsets[RF_FLOW]) != flow)
        return 0; /* another flow's state under the same key */
    encrypted = *place_of(state, rs->flow_offsets[RF_ENCRYPTED]);
    if (encrypted == Py_True)
        return 0;
    if (encrypted != Py_False)
        return -2;
    Py_INCREF(state); /* (records_end may drop it from followed) */
    int result = records_read(rs, followed, key, state, to_server, u32(data, ip + 24), data,
                              start, end);
    Py_DECREF(state);
    return result;
}

/* tls_walk(shape, followed, flow, to_server, data, ip, start, end): TlsRecords.walk of the
 * records followed in followed, compiled: True or False; None where a state is not of the
 * shape (nothing changed). The fast path's own, callable for the tests. */
static PyObject *tls_walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    RecordsShape rs;
    Py_ssize_t ip, start, end;
    PyObject *key, *state;
    int to_server, result;
    (void)module;
    if (nargs != 8 || !PyDict_Check(args[1]) || !PyBytes_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "tls_walk(shape, followed, flow, to_server, data, ip, start, end)");
        return NULL;
    }
    if (records_shape(args[0], &rs) < 0)
        return NULL;
    to_server = PyObject_IsTrue(args[3]);
    ip = PyLong_AsSsize_t(args[5]);
    start = PyLong_AsSsize_t(args[6]);
    end = PyLong_AsSsize_t(args[7]);
    if (to_server < 0 || PyErr_Occurred())
        return NULL;
    if (ip < 0 || start < ip + 28 || end < start || end > PyBytes_GET_SIZE(args[4])) {
        PyErr_SetString(PyExc_ValueError, "tls_walk: a segment outside its frame");
        return NULL;
    }
    key = PyObject_GetAttrString(args[2], "key");
    if (key == NULL)
        return NULL;
    state = PyDict_GetItemWithError(args[1], key);
    result = state == NULL ? (PyErr_Occurred() ? -1 : 0)
                           : records_walk(&rs, args[1], key, state, args[2], to_server,
                                          (const unsigned char *)PyBytes_AS_STRING(args[4]), ip,
                                          start, end);
    Py_DECREF(key);
    if (result < 0)
        return result == -1 ? NULL : Py_NewRef(Py_None);
    return PyBool_FromLong(result);
}

/* ---- a data segment the engine scans: its _scan_segment, compiled ------------------- */

static inline int attr_truth(PyObject *obj, PyObject *name)
{
    return truth_of(PyObject_GetAttr(obj, name));
}

/* obj.name as a Py_ssize_t (-1 and an exception on error). */
static Py_ssize_t attr_ssize(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    Py_ssize_t number;
    if (value == NULL)
        return -1;
    number = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    return number;
}

/* A slot of the reassembler (borrowed; NULL with AttributeError where unset), and its
 * setting. */
static PyObject *reassembler_slot(FastPath *fp, int which)
{
    PyObject *value = *place_of(fp->reassembler, fp->reassembler_offsets[which]);
    if (value == NULL)
        PyErr_SetString(PyExc_AttributeError, reassembler_slot_names[which]);
    return value;
}

static inline void set_reassembler_slot(FastPath *fp, int which, PyObject *value)
{
    keep(place_of(fp->reassembler, fp->reassembler_offsets[which]), value);
}

/* An int slot of the reassembler; -1 with an error set on failure. */
static Py_ssize_t reassembler_ssize(FastPath *fp, int which)
{
    PyObject *value = reassembler_slot(fp, which);
    return value == NULL ? -1 : PyLong_AsSsize_t(value); /* (no Python code runs) */
}

/* Reassembler.grew(stream, have, errors) for a direction grown by size bytes: its common
 * case (the bound on all directions' bytes not passed) here, else the method. 0, -1. */
static int stream_grew(FastPath *fp, PyObject *stream, Py_ssize_t have, Py_ssize_t size)
{
    PyObject *streams, *key, *number, *result;
    Py_ssize_t held, most;
    int known;
    if ((held = reassembler_ssize(fp, RA_HELD)) == -1 && PyErr_Occurred())
        return -1;
    if ((most = reassembler_ssize(fp, RA_MAX_BYTES)) == -1 && PyErr_Occurred())
        return -1;
    if ((streams = Py_XNewRef(reassembler_slot(fp, RA_STREAMS))) == NULL)
        return -1;
    if (held + size > most || !PyDict_Check(streams)) { /* (an OrderedDict) */
        PyObject *errors = PyObject_GetAttr(fp->stats, str_errors);
        Py_DECREF(streams);
        number = PyLong_FromSsize_t(have);
        result = errors == NULL || number == NULL
                     ? NULL
                     : PyObject_CallMethodObjArgs(fp->reassembler, str_grew, stream, number,
                                                  errors, NULL);
        Py_XDECREF(errors);
        Py_XDECREF(number);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
        return 0;
    }
    number = PyLong_FromSsize_t(held + size);
    if (number == NULL) {
        Py_DECREF(streams);
        return -1;
    }
    set_reassembler_slot(fp, RA_HELD, number);
    Py_DECREF(number);
    key = PyLong_FromVoidPtr(stream); /* id(stream) */
    if (key == NULL) {
        Py_DECREF(streams);
        return -1;
    }
    known = PyDict_Contains(streams, key);
    if (known > 0) {
        result = PyObject_CallMethodOneArg(streams, str_move_to_end, key);
        known = result == NULL ? -1 : 0;
        Py_XDECREF(result);
    } else if (known == 0) {
        known = PyObject_SetItem(streams, key, stream);
    }
    Py_DECREF(key);
    Py_DECREF(streams);
    return known;
}

/* Reassembler.finished(stream, fin) for the direction of a FIN taken by the fast path, fin
 * its sequence number: the direction's stream ends (its bytes freed) if it holds nothing out
 * of order and the FIN follows its bytes, or it reached its depth. The stream's common shape
 * is read here; another is the method's. 0, -1. */
static int fin_ends(FastPath *fp, PyObject *flow, int to_server, uint32_t fin)
{
    PyObject *pair, *stream, *base, *pending, *full, *held, *streams, *key, *value;
    Py_ssize_t start, have, total;
    int truth = 0, known;
    if (fp->reassembler == NULL || fp->reassembler == Py_None || fp->stream_type == NULL)
        return 0;
    pair = slot(fp, flow, S_STREAMS);
    if (pair == NULL || pair == Py_None || !PyList_Check(pair) || PyList_GET_SIZE(pair) != 2)
        return 0; /* (no stream, or not one the fast path scans: the full path's) */
    stream = PyList_GET_ITEM(pair, to_server);
    if (Py_TYPE(stream) != (PyTypeObject *)fp->stream_type)
        return 0;
    base = stream_slot(fp, stream, SD_BASE);
    pending = stream_slot(fp, stream, SD_PENDING);
    full = stream_slot(fp, stream, SD_FULL);
    held = stream_slot(fp, stream, SD_DATA);
    if (base == NULL || pending == NULL || full == NULL || held == NULL
        || !PyLong_CheckExact(base) || !PyByteArray_CheckExact(held)) {
        PyObject *result;
        value = PyLong_FromUnsignedLong(fin);
        result = value == NULL ? NULL
                               : PyObject_CallMethod(fp->reassembler, "finished", "OO", stream,
                                                     value);
        Py_XDECREF(value);
        Py_XDECREF(result);
        return result == NULL ? -1 : 0;
    }
    start = PyLong_AsSsize_t(base);
    if (start == -1 && PyErr_Occurred())
        return -1;
    if (start < 0 || (long long)start > 0xFFFFFFFFLL || (truth = PyObject_IsTrue(pending)) != 0)
        return truth < 0 ? -1 : 0;
    if ((truth = PyObject_IsTrue(full)) < 0)
        return -1;
    have = PyByteArray_GET_SIZE(held);
    if (!truth && (Py_ssize_t)(uint32_t)(fin - (uint32_t)start) != have)
        return 0; /* a gap before the FIN: the bytes to fill it may come yet */
    /* Reassembler.close(stream): nothing is held out of order */
    Py_INCREF(stream);
    streams = Py_XNewRef(reassembler_slot(fp, RA_STREAMS));
    key = streams == NULL ? NULL : PyLong_FromVoidPtr(stream);
    known = key == NULL ? -1 : PyDict_Contains(streams, key);
    if (known > 0) {
        known = PyObject_DelItem(streams, key);
        total = known < 0 ? -1 : reassembler_ssize(fp, RA_HELD);
        if (total == -1 && PyErr_Occurred()) {
            known = -1;
        } else if (known == 0) {
            value = PyLong_FromSsize_t(total - have);
            if (value == NULL)
                known = -1;
            else
                set_reassembler_slot(fp, RA_HELD, value);
            Py_XDECREF(value);
        }
    }
    Py_XDECREF(key);
    Py_XDECREF(streams);
    if (known >= 0) { /* ended, as the bound on all directions ends one */
        PyObject *none_held = PyByteArray_FromStringAndSize(NULL, 0), *ended = PyLong_FromLong(-1);
        if (none_held == NULL || ended == NULL) {
            known = -1;
        } else {
            set_stream_slot(fp, stream, SD_DATA, none_held);
            set_stream_slot(fp, stream, SD_BASE, ended);
            set_stream_slot(fp, stream, SD_FULL, Py_True);
        }
        Py_XDECREF(none_held);
        Py_XDECREF(ended);
    }
    Py_DECREF(stream);
    return known < 0 ? -1 : 0;
}

/* A prefilter's compiled scanner (its patterns attribute, a Patterns: a new reference),
 * or NULL: none (no error set), or an error. */
static PyObject *prefilter_patterns(PyObject *prefilter)
{
    PyObject *scanner = PyObject_GetAttr(prefilter, str_patterns);
    if (scanner == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        return NULL;
    }
    if (Py_TYPE(scanner) != &PatternsType) {
        Py_DECREF(scanner);
        return NULL;
    }
    return scanner;
}

/* ---- AnchorIndex.placed -------------------------------------------------------------- */

/* A fast pattern that must lie this close to its buffer's start (match.ANCHOR_LIMIT): a
 * stream's head is its first bytes up to this many. */
#define ANCHOR_LIMIT 64

static PyObject *str_sid, *str__scan, *str__mine, *str_reach, *str_prefilter, *str_entries,
    *str_clear, *str_reported, *str_anchored_reach;

/* Whether an anchored entry (rule, pattern, from, to, nocase) has its fast pattern in its
 * place in text[0:n], as match.in_place looks: 1, 0, -2 not in the shape expected. */
static int entry_placed(PyObject *entry, const unsigned char *text, Py_ssize_t n)
{
    PyObject *needle, *nocase;
    Py_ssize_t low, high;
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5)
        return -2;
    needle = PyTuple_GET_ITEM(entry, 1);
    nocase = PyTuple_GET_ITEM(entry, 4);
    if (!PyBytes_CheckExact(needle) || !PyBool_Check(nocase)
        || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 2))
        || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 3)))
        return -2;
    low = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
    high = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
    if ((low == -1 || high == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        return -2;
    }
    if (low < 0 || high < 0)
        return -2;
    return nocase == Py_True ? folded_in(text, n, needle, low, high)
                             : found_in(text, n, needle, low, high);
}

/* Whether a rule's sid is in skip (a set; NULL: none is): 1, 0, -1 on error. */
static int skipped(PyObject *sig, PyObject *skip)
{
    PyObject *sid;
    int found;
    if (skip == NULL || !PySet_GET_SIZE(skip))
        return 0;
    sid = PyObject_GetAttr(sig, str_sid);
    if (sid == NULL)
        return -1;
    found = PySet_Contains(skip, sid);
    Py_DECREF(sid);
    return found;
}

static int place_order(const void *a, const void *b)
{
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return (x > y) - (x < y);
}

/* AnchorIndex.placed(text, skip) over text[0:n]: the group's anchored rules (but those of a
 * sid in skip, a set or NULL) whose fast pattern is in its place there, in the group's order,
 * found with one scan of the rule set's anchored patterns by their compiled scanner; with
 * first, only the first of them. A new list; NULL on error, or with no error set where the
 * index is not in the shape expected or its scanner is not made yet (the index's own method
 * is to answer). */
static PyObject *index_placed(PyObject *index, const unsigned char *text, Py_ssize_t n,
                              PyObject *skip, int first)
{
    PyObject *scan = NULL, *mine = NULL, *reach_obj = NULL, *prefilter = NULL, *entries = NULL;
    PyObject *scanner = NULL, *placed = NULL;
    Py_ssize_t *places = NULL, count = 0, room = 0, reach, k, i;
    const unsigned char *own;
    Py_ssize_t owned;
    Patterns *pt;
    int32_t nfound;

    if ((scan = PyObject_GetAttr(index, str__scan)) == NULL
        || (mine = PyObject_GetAttr(index, str__mine)) == NULL
        || (reach_obj = PyObject_GetAttr(index, str_reach)) == NULL
        || (prefilter = PyObject_GetAttr(scan, str_prefilter)) == NULL
        || (entries = PyObject_GetAttr(scan, str_entries)) == NULL)
        goto error;
    if (!PyBytes_CheckExact(mine) || !PyLong_CheckExact(reach_obj) || !PyList_CheckExact(entries))
        goto twin;
    reach = PyLong_AsSsize_t(reach_obj);
    if (reach == -1 && PyErr_Occurred())
        goto error;
    if (reach < 0)
        goto twin;
    if ((scanner = prefilter_patterns(prefilter)) == NULL) {
        if (PyErr_Occurred())
            goto error;
        goto twin;
    }
    pt = (Patterns *)scanner;
    if (pt->rules == NULL || !PyList_CheckExact(pt->rules)
        || PyList_GET_SIZE(pt->rules) != pt->count)
        goto twin;
    if (n > reach) /* (no fast pattern of the group's lies further) */
        n = reach;
    if ((placed = PyList_New(0)) == NULL)
        goto error;
    nfound = patterns_run(pt, text, n, 0);
    own = (const unsigned char *)PyBytes_AS_STRING(mine);
    owned = PyBytes_GET_SIZE(mine);
    /* the places of the rules found, those of the group's alone (most often none) */
    for (k = 0; k < nfound; k++) {
        PyObject *rules = PyList_GET_ITEM(pt->rules, pt->found[k]);
        if (!PyList_CheckExact(rules))
            goto twin;
        for (i = 0; i < PyList_GET_SIZE(rules); i++) {
            PyObject *number = PyObject_GetAttr(PyList_GET_ITEM(rules, i), str_sid);
            Py_ssize_t place;
            if (number == NULL)
                goto error;
            place = PyLong_Check(number) ? PyLong_AsSsize_t(number) : -1;
            Py_DECREF(number);
            if (place == -1 && PyErr_Occurred())
                goto error;
            if (place < 0 || place >= owned || place >= PyList_GET_SIZE(entries))
                goto twin;
            if (!own[place])
                continue;
            if (count == room) {
                Py_ssize_t *more = PyMem_Resize(places, Py_ssize_t, (size_t)(room ? room * 2 : 8));
                if (more == NULL) {
                    PyErr_NoMemory();
                    goto error;
                }
                places = more;
                room = room ? room * 2 : 8;
            }
            places[count++] = place;
        }
    }
    if (count > 1)
        qsort(places, (size_t)count, sizeof(Py_ssize_t), place_order);
    for (i = 0; i < count; i++) {
        PyObject *entry = PyList_GET_ITEM(entries, places[i]);
        int found;
        if (i > 0 && places[i] == places[i - 1])
            continue;
        found = entry_placed(entry, text, n);
        if (found == -2)
            goto twin;
        if (!found)
            continue;
        found = skipped(PyTuple_GET_ITEM(entry, 0), skip);
        if (found < 0)
            goto error;
        if (found)
            continue;
        if (PyList_Append(placed, PyTuple_GET_ITEM(entry, 0)) < 0)
            goto error;
        if (first)
            break;
    }
    goto done;
twin:
    Py_CLEAR(placed);
    goto done;
error:
    Py_CLEAR(placed);
done:
    PyMem_Free(places);
    Py_XDECREF(scan);
    Py_XDECREF(mine);
    Py_XDECREF(reach_obj);
    Py_XDECREF(prefilter);
    Py_XDECREF(entries);
    Py_XDECREF(scanner);
    return placed;
}

/* stream.head_clear(group, stream, payload) for a stream whose data (a bytearray of have
 * bytes, have > 0) the in-order payload[0:size] is to follow: 1 (none of the group's anchored
 * rules not reported yet has its fast pattern in its place in the stream's head), 0, -1 on
 * error, -2 where the twin's function is to answer (stream.head_clear). */
static int stream_head_clear(PyObject *group, PyObject *stream, PyObject *held,
                             const unsigned char *payload, Py_ssize_t size)
{
    unsigned char head[ANCHOR_LIMIT];
    Py_ssize_t have = PyByteArray_GET_SIZE(held), length, reach, scanned;
    PyObject *clear, *index = NULL, *reported = NULL, *placed = NULL;
    int result = -1;

    clear = PyObject_GetAttr(stream, str_clear);
    if (clear == NULL)
        return -1;
    Py_DECREF(clear); /* (only its identity is read) */
    if (clear == group)
        return 1;
    reach = attr_ssize(group, str_anchored_reach);
    if (reach == -1 && PyErr_Occurred())
        return -1;
    scanned = attr_ssize(stream, str_scanned);
    if (scanned == -1 && PyErr_Occurred())
        return -1;
    if (reach >= 0 && scanned >= reach)
        return 1;
    length = have < ANCHOR_LIMIT ? have : ANCHOR_LIMIT;
    memcpy(head, PyByteArray_AS_STRING(held), (size_t)length);
    if (length < ANCHOR_LIMIT) {
        Py_ssize_t more = ANCHOR_LIMIT - length < size ? ANCHOR_LIMIT - length : size;
        memcpy(head + length, payload, (size_t)more);
        length += more;
    }
    if ((index = PyObject_GetAttr(group, str_anchor_index)) == NULL
        || (reported = PyObject_GetAttr(stream, str_reported)) == NULL)
        goto done;
    if (!PySet_CheckExact(reported)) {
        result = -2;
        goto done;
    }
    if (index != Py_None) {
        placed = index_placed(index, head, length, reported, 1);
        if (placed == NULL) {
            result = PyErr_Occurred() ? -1 : -2;
            goto done;
        }
        if (PyList_GET_SIZE(placed)) {
            result = 0;
            goto done;
        }
    } else {
        PyObject *fast = PyObject_GetAttr(group, str_anchored_fast);
        Py_ssize_t i;
        if (fast == NULL)
            goto done;
        if (!PyList_CheckExact(fast)) {
            Py_DECREF(fast);
            result = -2;
            goto done;
        }
        for (i = 0; i < PyList_GET_SIZE(fast); i++) {
            PyObject *entry = PyList_GET_ITEM(fast, i);
            int found = entry_placed(entry, head, length);
            if (found == 1) { /* placed: a rule reported already does not count */
                int reported_rule = skipped(PyTuple_GET_ITEM(entry, 0), reported);
                if (reported_rule > 0)
                    continue;
                if (reported_rule < 0)
                    found = -1;
            }
            if (found == 0)
                continue;
            Py_DECREF(fast);
            result = found == 1 ? 0 : found;
            goto done;
        }
        Py_DECREF(fast);
    }
    if (length >= ANCHOR_LIMIT && PyObject_SetAttr(stream, str_clear, group) < 0)
        goto done; /* the head stays, the reported rules only grow */
    result = 1;
done:
    Py_XDECREF(index);
    Py_XDECREF(reported);
    Py_XDECREF(placed);
    return result;
}

/* The engine's _scan_outer(group, data, end) where each payload prefilter of the group has
 * its compiled scanner: 1 none finds a pattern in the G-PDU's UDP payload data[42:end], 0
 * one does, 2 a payload prefilter without one (the engine's to answer), -1 error. */
static int outer_clear(PyObject *group, const unsigned char *data, Py_ssize_t end)
{
    PyObject *prefilters = PyObject_GetAttr(group, str_prefilters);
    Py_ssize_t i, count;
    int result = 1;
    if (prefilters == NULL)
        return -1;
    if (!PyList_CheckExact(prefilters) || end < 42) {
        Py_DECREF(prefilters);
        return 2;
    }
    count = PyList_GET_SIZE(prefilters);
    for (i = 0; i < count && result == 1; i++) {
        PyObject *prefilter = PyList_GET_ITEM(prefilters, i), *name, *scanner;
        int payload;
        Py_INCREF(prefilter);
        name = PyObject_GetAttr(prefilter, str_buffer);
        payload = name == NULL ? -1
                               : PyUnicode_Check(name) && str_is(name, "pkt", 3);
        Py_XDECREF(name);
        if (payload < 0) {
            result = -1;
        } else if (payload) {
            scanner = prefilter_patterns(prefilter);
            if (scanner == NULL) {
                result = PyErr_Occurred() ? -1 : 2;
            } else {
                if (patterns_any((Patterns *)scanner, data + 42, end - 42))
                    result = 0;
                Py_DECREF(scanner);
            }
        }
        Py_DECREF(prefilter);
    }
    Py_DECREF(prefilters);
    return result;
}

/* The engine's _scan_segment(flow, to_server, group, data, ip, start, end). */
static int scan_twin(FastPath *fp, PyObject *flow, int to_server, PyObject *group,
                     PyObject *bytes, Py_ssize_t ip, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *args[7] = {flow, to_server ? Py_True : Py_False, group, bytes, NULL, NULL, NULL};
    Py_ssize_t numbers[3] = {ip, start, end};
    PyObject *taken = NULL;
    int i;
    for (i = 0; i < 3; i++)
        if ((args[4 + i] = PyLong_FromSsize_t(numbers[i])) == NULL)
            break;
    if (i == 3)
        taken = PyObject_Vectorcall(fp->segment, args, 7, NULL);
    while (i-- > 0)
        Py_DECREF(args[4 + i]);
    return truth_of(taken);
}

/* _scan_segment for a data segment (start < end): 1 taken (appended to its stream), 0 the
 * full path is to take it (nothing changed), -1 error. A prefilter with a compiled scanner
 * (Patterns) is scanned here; another's scan and the stream's growth past its bound are the
 * engine's (Prefilter.candidates, Reassembler.grew), called; what is not in the shape
 * expected is left to the engine's _scan_segment. */
/* Whether an HTTP flow's direction has a message being gathered across segments (in the
 * HttpSplit's pending messages, by (flow key, to_server)); if not, the splitter's current
 * message and request are cleared, as its segment() starts. 1, 0, -1 on error. */
static int http_gathered(FastPath *fp, PyObject *flow, int to_server)
{
    PyObject *key = slot(fp, flow, S_KEY), *pending, *both;
    int found;
    if (key == NULL)
        return -1;
    pending = PyObject_GetAttr(fp->http, str_pending);
    if (pending == NULL)
        return -1;
    both = PyTuple_Pack(2, key, to_server ? Py_True : Py_False);
    found = both == NULL ? -1 : PySequence_Contains(pending, both);
    Py_XDECREF(both);
    Py_DECREF(pending);
    if (found == 0 && (PyObject_SetAttr(fp->http, str__current, Py_None) < 0
                       || PyObject_SetAttr(fp->http, str__request, Py_None) < 0))
        return -1;
    return found;
}

static int scan_segment(FastPath *fp, PyObject *flow, int to_server, PyObject *group,
                        GroupInfo *info, PyObject *bytes, Py_ssize_t ip, Py_ssize_t start,
                        Py_ssize_t end)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t size = end - start, have = 0, scanned = 0, base, i, count;
    PyObject *app, *scans = NULL, *pair = NULL, *stream = NULL, *held = NULL,
             *payload = NULL;
    int result = -1, truth, grows = 0, appended = 0, encrypted = 0;

    if (fp->stream_type == NULL || fp->stats == NULL || start >= end)
        return scan_twin(fp, flow, to_server, group, bytes, ip, start, end);
    app = slot(fp, flow, S_APP);
    if (app == NULL || !PyUnicode_CheckExact(app))
        return scan_twin(fp, flow, to_server, group, bytes, ip, start, end);
    if (str_is(app, "tls", 3)) {
        if (to_server && data[start] == 0x16)
            return 0; /* a handshake record: a ClientHello's SNI */
        PyObject *followed = NULL;
        if (fp->tls_walk != NULL) {
            PyObject *key = slot(fp, flow, S_KEY);
            if (key != NULL && PyDict_Check(fp->tls_flows)
                && (followed = PyDict_GetItemWithError(fp->tls_flows, key)) == NULL
                && PyErr_Occurred())
                return -1;
            if (key == NULL || !PyDict_Check(fp->tls_flows))
                followed = Py_None; /* (not as expected: walked, as the twin does) */
        }
        if (followed != NULL) { /* its records followed: where it turns encrypted */
            encrypted = -2;
            if (followed != Py_None && fp->tls_shape_held != NULL)
                encrypted = records_walk(&fp->tls_shape, fp->tls_flows, slot(fp, flow, S_KEY),
                                         followed, flow, to_server, data, ip, start, end);
            if (encrypted == -2) { /* (not of the shape: the twin's walk) */
                PyObject *args[6] = {flow, to_server ? Py_True : Py_False, bytes, NULL, NULL,
                                     NULL};
                Py_ssize_t numbers[3] = {ip, start, end};
                int k;
                encrypted = -1;
                for (k = 0; k < 3; k++)
                    if ((args[3 + k] = PyLong_FromSsize_t(numbers[k])) == NULL)
                        break;
                if (k == 3)
                    encrypted = truth_of(PyObject_Vectorcall(fp->tls_walk, args, 6, NULL));
                while (k-- > 0)
                    Py_DECREF(args[3 + k]);
            }
            if (encrypted < 0)
                return -1;
        }
    } else if (str_is(app, "http", 4)) {
        if (data[start] >= 'A' && data[start] <= 'Z')
            return 0; /* may start a request or a response */
        if (fp->http == NULL)
            return scan_twin(fp, flow, to_server, group, bytes, ip, start, end);
        if (fp->http != Py_None && (truth = http_gathered(fp, flow, to_server)) != 0)
            return truth < 0 ? -1 : 0; /* continues a message being gathered */
    }
    if (!PyList_CheckExact(info->scans))
        goto twin;
    scans = info->scans;
    Py_INCREF(scans);
    if (fp->reassembler != Py_None && info->reads_payload) {
        PyObject *full, *pending, *waiting, *number;
        pair = slot(fp, flow, S_STREAMS);
        if (pair == NULL || (pair != Py_None
                             && (!PyList_CheckExact(pair) || PyList_GET_SIZE(pair) != 2))) {
            pair = NULL;
            goto twin;
        }
        Py_INCREF(pair);
        if (pair == Py_None) {
            result = 0; /* its first payload opens it */
            goto done;
        }
        stream = PyList_GET_ITEM(pair, to_server);
        Py_INCREF(stream);
        if (PyLong_CheckExact(stream)) {
            /* the direction's first payload: its stream opened here, as stream_hits opens
             * it (the sequence number its SYN gave) */
            PyObject *opened = PyObject_CallOneArg(fp->stream_type, stream);
            if (opened == NULL)
                goto done;
            Py_DECREF(stream);
            stream = opened;
            Py_INCREF(opened);
            if (PyList_SetItem(pair, to_server, opened) < 0)
                goto done;
        }
        if (Py_TYPE(stream) != (PyTypeObject *)fp->stream_type) {
            result = 0;
            goto done;
        }
        full = stream_slot(fp, stream, SD_FULL);
        pending = stream_slot(fp, stream, SD_PENDING);
        waiting = stream_slot(fp, stream, SD_WAITING);
        number = stream_slot(fp, stream, SD_BASE);
        held = stream_slot(fp, stream, SD_DATA);
        if (full == NULL || pending == NULL || waiting == NULL || number == NULL
            || held == NULL || !PyByteArray_CheckExact(held) || !PyLong_CheckExact(number)) {
            held = NULL;
            goto twin;
        }
        Py_INCREF(held);
        if ((truth = PyObject_IsTrue(full)) < 0 || (grows = PyObject_IsTrue(pending)) < 0)
            goto done;
        if (!truth || grows) { /* else past the depth: the packet alone is scanned */
            if (grows || (truth = PyObject_IsTrue(waiting)) != 0) {
                result = grows || truth > 0 ? 0 : -1;
                goto done; /* out of order, or a rule waiting */
            }
            grows = 1;
            base = PyLong_AsSsize_t(number);
            if (base == -1 && PyErr_Occurred())
                goto done;
            if ((long long)base > 0xFFFFFFFFLL)
                goto twin;
            have = PyByteArray_GET_SIZE(held);
            if (base < 0 || (Py_ssize_t)(uint32_t)(u32(data, ip + 24) - (uint32_t)base) != have
                || have + size > fp->depth) {
                result = 0; /* ended, out of order, overlapping, past the depth */
                goto done;
            }
            if (have) {
                number = stream_slot(fp, stream, SD_SCANNED);
                if (number == NULL)
                    goto twin;
                scanned = PyLong_AsSsize_t(number);
                if (scanned == -1 && PyErr_Occurred())
                    goto done;
                if (info->anchored) {
                    truth = stream_head_clear(group, stream, held, data + start, size);
                    if (truth == -2) { /* (not of the shape expected: the twin's) */
                        payload = PyBytes_FromStringAndSize((const char *)data + start, size);
                        if (payload == NULL)
                            goto done;
                        truth = truth_of(PyObject_CallFunctionObjArgs(fp->head_clear, group,
                                                                      stream, payload, NULL));
                    }
                    if (truth <= 0) {
                        result = truth;
                        goto done;
                    }
                }
            }
            /* appended first, the scans below reading the stream in place (taken back if
             * one finds a pattern) */
            if (stream_resize(held, have + size, fp->depth) < 0)
                goto done;
            memcpy(PyByteArray_AS_STRING(held) + have, data + start, (size_t)size);
            appended = 1;
        }
    }
    /* one scan a prefilter: of the payload, or of the stream from where its last scan ended
     * (less a pattern's length) through the segment; a prefilter's compiled scanner read
     * here, in place (its answer is only whether a pattern occurs) */
    count = PyList_GET_SIZE(scans);
    for (i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(scans, i), *text, *scanner;
        const uint8_t *from = data + start;
        Py_ssize_t lo = 0, length = size;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
            goto twin;
        if (appended && have) {
            Py_ssize_t width = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 1));
            if (width == -1 && PyErr_Occurred())
                goto done;
            lo = scanned - width + 1;
            lo = lo < 0 ? 0 : lo > have ? have : lo;
            from = (const uint8_t *)PyByteArray_AS_STRING(held) + lo;
            length = have + size - lo;
        }
        scanner = prefilter_patterns(PyTuple_GET_ITEM(item, 0));
        if (scanner == NULL && PyErr_Occurred())
            goto done;
        if (scanner != NULL) {
            truth = patterns_any((Patterns *)scanner, from, length);
            Py_DECREF(scanner);
            if (truth) {
                result = 0;
                goto done;
            }
            continue;
        }
        text = PyBytes_FromStringAndSize((const char *)from, length);
        if (text == NULL)
            goto done;
        Py_INCREF(item);
        truth = truth_of(PyObject_CallMethodOneArg(PyTuple_GET_ITEM(item, 0), str_candidates,
                                                   text));
        Py_DECREF(item);
        Py_DECREF(text);
        if (truth != 0) {
            result = truth > 0 ? 0 : -1;
            goto done;
        }
    }
    if (appended) { /* kept: accounted for as the full path's stream_hits does */
        PyObject *now, *number;
        appended = 0;
        if (stream_grew(fp, stream, have, size) < 0)
            goto done;
        now = stream_slot(fp, stream, SD_DATA); /* (emptied where the bound ended it) */
        if (have && now != NULL && PyByteArray_CheckExact(now) && PyByteArray_GET_SIZE(now)) {
            number = PyLong_FromSsize_t(PyByteArray_GET_SIZE(now));
            if (number == NULL)
                goto done;
            set_stream_slot(fp, stream, SD_SCANNED, number);
            Py_DECREF(number);
        }
    }
    result = 1;
    if (encrypted && fp->tls_taken != NULL) { /* taken: the flow regrouped, as after it */
        PyObject *done_now = PyObject_CallOneArg(fp->tls_taken, flow);
        if (done_now == NULL)
            result = -1;
        Py_XDECREF(done_now);
    }
    goto done;
twin:
    if (appended) {
        appended = 0;
        if (PyByteArray_Resize(held, have) < 0)
            goto done;
    }
    result = scan_twin(fp, flow, to_server, group, bytes, ip, start, end);
done:
    if (appended && PyByteArray_Resize(held, have) < 0) /* taken back */
        result = -1;
    Py_XDECREF(scans);
    Py_XDECREF(pair);
    Py_XDECREF(stream);
    Py_XDECREF(held);
    Py_XDECREF(payload);
    return result;
}

/* ---- the flow's time and place ------------------------------------------------------- */

/* The 12-byte flow key at raw (addresses and ports) as a bytes object, a new reference: the
 * one made for the same bytes before while it keeps its place in a small cache (by a hash
 * of the bytes), so that the index's look-up finds its hash already computed, and no key
 * is made for each packet. (Bytes never change: a key kept stays right for its bytes; the
 * index is looked up each time as before.) NULL on error. */
static PyObject *flow_key(FastPath *fp, const unsigned char *raw)
{
    uint64_t low;
    uint32_t high;
    PyObject **place, *key;
    if (fp->keys == NULL) {
        fp->keys = PyMem_Calloc(KEY_CACHE, sizeof(PyObject *));
        if (fp->keys == NULL)
            return PyErr_NoMemory();
    }
    memcpy(&low, raw, 8);
    memcpy(&high, raw + 8, 4);
    low = (low ^ ((uint64_t)high << 29) ^ high) * 0x9E3779B97F4A7C15ull;
    place = &fp->keys[low >> (64 - KEY_BITS)];
    key = *place;
    if (key != NULL && memcmp(PyBytes_AS_STRING(key), raw, 12) == 0)
        return Py_NewRef(key);
    key = PyBytes_FromStringAndSize((const char *)raw, 12);
    if (key != NULL)
        Py_XSETREF(*place, Py_NewRef(key));
    return key;
}

/* flow.last_ts = ts, the direction's counter, and the LRU refresh at most once a second. */
static int touch(FastPath *fp, PyObject *flow, PyObject *ts_obj, double ts, int to_server)
{
    double touched;
    set_slot(fp, flow, S_LAST_TS, ts_obj);
    if (increment(fp, flow, to_server ? S_PACKETS_TO_SERVER : S_PACKETS_TO_CLIENT) < 0)
        return -1;
    touched = slot_double(fp, flow, S_TOUCHED);
    if (touched == -1.0 && PyErr_Occurred())
        return -1;
    if (ts - touched >= 1.0) {
        PyObject *key = slot(fp, flow, S_KEY);
        PyObject *done;
        if (key == NULL) {
            PyErr_SetString(PyExc_AttributeError, "key");
            return -1;
        }
        done = PyObject_CallMethodOneArg(fp->flows, str_move_to_end, key);
        if (done == NULL)
            return -1;
        Py_DECREF(done);
        set_slot(fp, flow, S_TOUCHED, ts_obj);
    }
    return 0;
}

/* Whether a flow's sizes (stream.StreamSizes: [client's initial sequence number, its next,
 * the server's, its next], -1 not seen yet) are a list of four ints this counts in. */
static int sizes_shape(PyObject *seqs)
{
    Py_ssize_t i;
    if (seqs == NULL || !PyList_CheckExact(seqs) || PyList_GET_SIZE(seqs) != 4)
        return 0;
    for (i = 0; i < 4; i++)
        if (!PyLong_CheckExact(PyList_GET_ITEM(seqs, i)))
            return 0;
    return 1;
}

/* stream.count_segment: a side's count after one of its segments the fast path takes (length
 * payload bytes, syn its SYN flag), as the full path's StreamSizes.update counts; 0, or -1
 * on error (seqs in sizes_shape). */
static int count_segment(PyObject *seqs, int to_server, uint32_t seq, Py_ssize_t length, int syn)
{
    Py_ssize_t side = to_server ? 0 : 2;
    long first = PyLong_AsLong(PyList_GET_ITEM(seqs, side));
    long next = PyLong_AsLong(PyList_GET_ITEM(seqs, side + 1));
    uint32_t end, ahead;
    if ((first == -1 || next == -1) && PyErr_Occurred())
        return -1;
    if (syn || first < 0) {
        uint32_t initial = syn ? seq : seq - 1u;
        PyObject *a = PyLong_FromUnsignedLong(initial);
        PyObject *b = PyLong_FromUnsignedLong((uint32_t)(initial + 1u));
        if (a == NULL || b == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            return -1;
        }
        PyList_SetItem(seqs, side, a); /* (steals a, b) */
        PyList_SetItem(seqs, side + 1, b);
        next = (long)(uint32_t)(initial + 1u);
    }
    end = seq + (uint32_t)length + (syn ? 1u : 0u);
    ahead = end - (uint32_t)next;
    if (ahead != 0 && ahead < 0x80000000u) {
        PyObject *value = PyLong_FromUnsignedLong(end);
        if (value == NULL)
            return -1;
        PyList_SetItem(seqs, side + 1, value);
    }
    return 0;
}

/* ---- _fast_tcp ----------------------------------------------------------------------- */

/* 1 taken, 0 not, -1 error, 2 no flow under the key (then *missing, if given, is the key:
 * a new reference). */
static int fast_tcp(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes, Py_ssize_t ip,
                    Py_ssize_t end, int tunnel, PyObject **missing)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    PyObject *key, *flow, *fast, *group, *app, *value;
    GroupInfo *info;
    int to_server, flags, state, established = 1, result = 0, truth, settled;
    Py_ssize_t offset, start, size;
    double last;

    key = flow_key(fp, data + ip + 12);
    if (key == NULL)
        return -1;
    flow = PyDict_GetItemWithError(fp->index, key);
    if (flow == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        if (missing != NULL)
            *missing = key;
        else
            Py_DECREF(key);
        return 2;
    }
    Py_DECREF(key);
    if (Py_TYPE(flow) != (PyTypeObject *)fp->flow_type)
        return 0;
    Py_INCREF(flow);
    to_server = is_forward(fp, flow, (const char *)data + ip + 12, 12);
    fast = slot(fp, flow, to_server ? S_FAST_S : S_FAST_C);
    flags = data[ip + 33];
    if (fast == NULL || fast == Py_None || flags & 0x04)
        goto done;
    if (fp->sizes && !sizes_shape(slot(fp, flow, S_SIZES)))
        goto done; /* (the full path starts the count) */
    last = slot_double(fp, flow, S_LAST_TS);
    if (last == -1.0 && PyErr_Occurred())
        goto error;
    if (ts - last > fp->idle_timeout)
        goto done;
    if (tunnel) {
        value = slot(fp, flow, S_GTP_OK);
        if (value == NULL || (truth = PyObject_IsTrue(value)) < 0)
            goto error;
        if (!truth)
            goto done;
    }
    value = slot(fp, flow, S_TCP_STATE);
    if (value == NULL || !PyLong_CheckExact(value))
        goto done;
    state = (int)PyLong_AsLong(value);
    settled = state == TCP_ESTABLISHED;
    if (state == TCP_ESTABLISHED) {
        if (flags & 0x02)
            goto done;
    } else if (state == TCP_SYN_SENT && !to_server && (flags & 0x12) == 0x12) {
        state = TCP_SYN_RECV;
        established = 0;
    } else if (state == TCP_SYN_RECV && to_server && (flags & 0x12) == 0x10) {
        state = TCP_ESTABLISHED;
    } else {
        goto done;
    }
    /* (quiet, group, app) or (False, group, app, True): a direction _scan_segment takes */
    if (!PyTuple_Check(fast) || (size = PyTuple_GET_SIZE(fast)) < 3 || size > 4)
        goto done;
    Py_INCREF(fast);
    group = PyTuple_GET_ITEM(fast, 1);
    app = slot(fp, flow, S_APP);
    if (app == NULL) {
        PyErr_SetString(PyExc_AttributeError, "app");
        goto error_fast;
    }
    truth = PyObject_RichCompareBool(PyTuple_GET_ITEM(fast, 2), app, Py_EQ);
    if (truth <= 0)
        goto leave_fast;
    info = group_info(fp, group);
    if (info == NULL)
        goto error_fast;
    offset = data[ip + 32] >> 4;
    start = ip + 20 + (offset << 2);
    if (offset < 5 || start > end)
        goto leave_fast_zero;
    if ((truth = group_gated(info, flags, established, data, ip, end - start)) <= 0)
        goto leave_fast;
    if (start < end || flags & 0x02) {
        int quiet = PyObject_IsTrue(PyTuple_GET_ITEM(fast, 0));
        if (quiet < 0) {
            truth = -1;
            goto leave_fast;
        }
        if (start < end) {
            if (!quiet && (size < 4 || !settled || fp->segment == NULL))
                goto leave_fast_zero;
            if (info->anchored
                && (truth = anchored_hit(fp, group, info->probe, bytes, start, end,
                                         established))
                       != 0)
                goto leave_fast;
        } else if (!quiet && fp->segment == NULL) {
            goto leave_fast_zero; /* the SYN/ACK: its stream opens in the full path */
        }
        /* a data segment of a direction the engine scans, or the SYN/ACK of one that is
         * not quiet (its stream opens) */
        if (!quiet
            && (truth = scan_segment(fp, flow, to_server, group, info, bytes, ip, start, end)) <= 0)
            goto leave_fast;
    }
    Py_DECREF(fast);
    if (fp->sizes) { /* the stream sizes count the segment, as the full path's would */
        PyObject *seqs = slot(fp, flow, S_SIZES);
        if (!sizes_shape(seqs)) {
            PyErr_SetString(PyExc_TypeError, "Flow.sizes: four ints");
            goto error;
        }
        Py_INCREF(seqs);
        truth = count_segment(seqs, to_server, u32(data, ip + 24), end - start,
                              flags & 0x02);
        Py_DECREF(seqs);
        if (truth < 0)
            goto error;
    }
    value = slot(fp, flow, S_TCP_STATE);
    if (value == NULL || !PyLong_CheckExact(value) || PyLong_AsLong(value) != state) {
        PyObject *number = PyLong_FromLong(state);
        if (number == NULL)
            goto error;
        set_slot(fp, flow, S_TCP_STATE, number);
        Py_DECREF(number);
        set_slot(fp, flow, S_ESTABLISHED, established ? Py_True : Py_False);
    }
    if (touch(fp, flow, ts_obj, ts, to_server) < 0)
        goto error;
    /* its FIN: the direction's stream may end (as the full path ends it) */
    if (flags & 0x01
        && fin_ends(fp, flow, to_server, u32(data, ip + 24) + (uint32_t)(end - start)) < 0)
        goto error;
    result = 1;
    goto done;
leave_fast_zero:
    truth = 0;
leave_fast:
    Py_DECREF(fast);
    if (truth < 0)
        goto error;
done:
    Py_DECREF(flow);
    return result;
error_fast:
    Py_DECREF(fast);
error:
    Py_DECREF(flow);
    return -1;
}

/* ---- _fast_gtp ----------------------------------------------------------------------- */

static PyObject *unheld(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes,
                        PyObject *key, Py_ssize_t end, int whole, Py_ssize_t ip,
                        PyObject *outer);

/* _fast_gtp(ts, data): 1 taken, 0 the full path's, 3 the inner packet opened a flow on the
 * new-flow path (its alerts, a new reference, in *alerts), -1 on error. */
static int fast_gtp(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes, PyObject **alerts)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    Py_ssize_t total = u16(data, 16);
    Py_ssize_t end = 14 + total;
    PyObject *key, *outer, *fast, *group, *value;
    GroupInfo *info;
    int to_server, established, truth, result = 0;
    double last;
    unsigned char raw[13];

    if (end > n || total < 76 || u16(data, 38) != total - 20 || data[42] != 0x30
        || data[43] != 255 || u16(data, 44) != total - 36
        || (data[46] | data[47] | data[48] | data[49]) == 0 || data[50] != 0x45
        || data[59] != 6 || data[56] & 0x3F || data[57]
        || u16(data, 52) != total - 36)
        return 0;
    memcpy(raw, data + 26, 12);
    raw[12] = 0x11;
    key = PyBytes_FromStringAndSize((const char *)raw, 13);
    if (key == NULL)
        return -1;
    outer = PyDict_GetItemWithError(fp->index, key);
    Py_DECREF(key);
    if (outer == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (Py_TYPE(outer) != (PyTypeObject *)fp->flow_type)
        return 0;
    Py_INCREF(outer);
    to_server = is_forward(fp, outer, (const char *)raw, 13);
    fast = slot(fp, outer, to_server ? S_FAST_S : S_FAST_C);
    if (fast == NULL || fast == Py_None || !PyTuple_Check(fast) || PyTuple_GET_SIZE(fast) != 3)
        goto done;
    value = slot(fp, outer, S_APP);
    if (value == NULL)
        goto done;
    if ((truth = PyObject_RichCompareBool(value, str_gtp, Py_EQ)) <= 0)
        goto check;
    last = slot_double(fp, outer, S_LAST_TS);
    if (last == -1.0 && PyErr_Occurred())
        goto error;
    if (ts - last > fp->idle_timeout)
        goto done;
    value = slot(fp, outer, S_ESTABLISHED);
    if (value == NULL || (established = PyObject_IsTrue(value)) < 0)
        goto error;
    if (!established) {
        value = slot(fp, outer, to_server ? S_PACKETS_TO_CLIENT : S_PACKETS_TO_SERVER);
        if (value == NULL || (truth = PyObject_IsTrue(value)) < 0)
            goto error;
        if (truth)
            goto done;
    }
    Py_INCREF(fast);
    group = PyTuple_GET_ITEM(fast, 1);
    info = group_info(fp, group);
    if (info == NULL) {
        truth = -1;
        goto leave_fast;
    }
    if ((truth = group_gated(info, -1, established, data, 14, end - 42)) <= 0)
        goto leave_fast;
    if (info->anchored
        && (truth = anchored_hit(fp, group, info->probe, bytes, 42, end, established)) != 0)
        goto leave_fast;
    if (info->prefilters) { /* its payload scanned here, or through the engine's _scan_outer */
        PyObject *args[3] = {group, bytes, NULL};
        if (fp->outer == NULL || fp->outer == Py_None) {
            truth = 0;
            goto leave_fast;
        }
        truth = outer_clear(group, (const unsigned char *)PyBytes_AS_STRING(bytes), end);
        if (truth == 2) {
            if ((args[2] = PyLong_FromSsize_t(end)) == NULL) {
                truth = -1;
                goto leave_fast;
            }
            truth = truth_of(PyObject_Vectorcall(fp->outer, args, 3, NULL));
            Py_DECREF(args[2]);
        }
        if (truth <= 0)
            goto leave_fast;
    }
    Py_DECREF(fast);
    {
        PyObject *inner = NULL, *found;
        truth = fast_tcp(fp, ts_obj, ts, bytes, 50, end, 1, &inner);
        if (truth == 2) { /* no flow holds the inner packet's key */
            found = unheld(fp, ts_obj, ts, bytes, inner, end, 1, 50, outer);
            if (found == NULL)
                goto error;
            truth = found == Py_True ? 1 : found == Py_False ? 0 : 3;
            if (truth == 3)
                *alerts = found;
            else
                Py_DECREF(found);
        }
    }
    if (truth < 0)
        goto error;
    if (truth != 1 && truth != 3)
        goto done;
    if (touch(fp, outer, ts_obj, ts, to_server) < 0) {
        if (truth == 3)
            Py_CLEAR(*alerts);
        goto error;
    }
    result = truth;
    goto done;
leave_fast:
    Py_DECREF(fast);
check:
    if (truth < 0)
        goto error;
done:
    Py_DECREF(outer);
    return result;
error:
    Py_DECREF(outer);
    return -1;
}

/* ---- FlowTable.lookup's common case ------------------------------------------------- */

static inline PyObject *layer_slot(FastPath *fp, PyObject *layer, int which)
{
    return *place_of(layer, fp->layer_offsets[which]);
}

static inline long small(PyObject *value, int *ok)
{
    long number;
    if (value == NULL || !PyLong_CheckExact(value)) {
        *ok = 0;
        return 0;
    }
    number = PyLong_AsLong(value);
    if (number == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        *ok = 0;
    }
    return number;
}

static int set_long(FastPath *fp, PyObject *flow, int which, long number)
{
    PyObject *value = PyLong_FromLong(number);
    if (value == NULL)
        return -1;
    set_slot(fp, flow, which, value);
    Py_DECREF(value);
    return 0;
}

/* flow.tcp_track(flags, to_server) for a flow not established or a packet with RST. */
static int tcp_track(FastPath *fp, PyObject *flow, long flags, int to_server, long state)
{
    long syn_ack = flags & 0x12;
    if (state == TCP_ESTABLISHED) {
        if (flags & 0x04) {
            set_slot(fp, flow, S_ESTABLISHED, Py_False);
            return set_long(fp, flow, S_TCP_STATE, 0);
        }
        return 0;
    }
    if (syn_ack == 0x02 && to_server)
        return set_long(fp, flow, S_TCP_STATE, TCP_SYN_SENT);
    if (syn_ack == 0x12 && !to_server && state == TCP_SYN_SENT)
        return set_long(fp, flow, S_TCP_STATE, TCP_SYN_RECV);
    if (syn_ack == 0x10 && to_server && state == TCP_SYN_RECV) {
        if (set_long(fp, flow, S_TCP_STATE, TCP_ESTABLISHED) < 0)
            return -1;
        set_slot(fp, flow, S_ESTABLISHED, Py_True);
    }
    return 0;
}

static long long_attr(PyObject *obj, PyObject *name);
static PyObject *hatched(FastPath *fp, PyObject *key, double ts);
static PyObject *new_flow(FastPath *fp, PyObject *key, PyObject *reverse, PyObject *proto,
                          PyObject *ts_obj);

/* FlowTable.lookup's new flow (_create): the packet's key (stolen) is in no flow's index
 * entry. (flow, to_server), or Py_None (a new reference) where the twin's lookup is to
 * take the packet (an embryo hatches under the key); NULL on error. */
/* FlowTable's sweep of idle flows when it is due (ts at or past _next_sweep), as
 * FlowTable.lookup and add_embryo do it; 0, or -1 on error. */
static int table_sweep(FastPath *fp, PyObject *ts_obj, double ts)
{
    PyObject *next = PyObject_GetAttr(fp->table, str_next_sweep), *done;
    double sweep;
    if (next == NULL)
        return -1;
    sweep = PyFloat_AsDouble(next);
    Py_DECREF(next);
    if (sweep == -1.0 && PyErr_Occurred())
        return -1;
    if (ts < sweep)
        return 0;
    done = PyObject_CallMethodOneArg(fp->table, str_sweep, ts_obj);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* FlowTable's eviction of the oldest flow once the table holds more than max_flows; 0, or
 * -1 on error. */
static int table_evict(FastPath *fp)
{
    long limit = long_attr(fp->table, str_max_flows), size;
    PyObject *done;
    if (limit == -1 && PyErr_Occurred())
        return -1;
    size = (long)PyObject_Size(fp->flows);
    if (size < 0)
        return -1;
    if (size <= limit)
        return 0;
    done = PyObject_CallMethodNoArgs(fp->table, str_evict);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

static PyObject *lookup_new(FastPath *fp, PyObject *layer, PyObject *key, long proto,
                            long flags, PyObject *ts_obj, double ts)
{
    PyObject *reverse = NULL, *flow = NULL, *client, *server, *result;
    const char *raw = PyBytes_AS_STRING(key);
    Py_ssize_t size = PyBytes_GET_SIZE(key), half = (size - 4 - (proto != 6)) / 2;
    long embryos;
    int syn_ack, to_server;
    char *out;

    if (proto == 6) {
        embryos = long_attr(fp->table, str_embryos);
        if (embryos == -1 && PyErr_Occurred())
            goto error;
        if (embryos) {
            /* an embryo under the key (or the other direction's) hatches first */
            PyObject *hatchling = size == 12 ? hatched(fp, key, ts) : NULL;
            if (hatchling == NULL && size == 12)
                goto error;
            if (hatchling != Py_None) {
                Py_XDECREF(hatchling);
                Py_DECREF(key);
                Py_RETURN_NONE; /* the twin's lookup takes it (from the index, if hatched) */
            }
            Py_DECREF(hatchling);
        }
    }
    reverse = PyBytes_FromStringAndSize(NULL, size);
    if (reverse == NULL)
        goto error;
    out = PyBytes_AS_STRING(reverse);
    memcpy(out, raw + half, (size_t)half);
    memcpy(out + half, raw, (size_t)half);
    memcpy(out + 2 * half, raw + 2 * half + 2, 2);
    memcpy(out + 2 * half + 2, raw + 2 * half, 2);
    if (proto != 6)
        out[size - 1] = raw[size - 1];
    syn_ack = proto == 6 && (flags & 0x12) == 0x12; /* its receiver is the client */
    client = syn_ack ? reverse : key;
    server = syn_ack ? key : reverse;
    to_server = !syn_ack;
    if (table_sweep(fp, ts_obj, ts) < 0)
        goto error;
    flow = new_flow(fp, client, server, layer_slot(fp, layer, LK_PROTO), ts_obj);
    if (flow == NULL)
        goto error;
    if (PyObject_SetItem(fp->flows, client, flow) < 0
        || PyDict_SetItem(fp->index, client, flow) < 0
        || PyDict_SetItem(fp->index, server, flow) < 0)
        goto error;
    if (table_evict(fp) < 0)
        goto error;
    if (increment(fp, flow, to_server ? S_PACKETS_TO_SERVER : S_PACKETS_TO_CLIENT) < 0)
        goto error;
    if (proto == 6 && tcp_track(fp, flow, flags, to_server, 0) < 0)
        goto error;
    result = PyTuple_Pack(2, flow, to_server ? Py_True : Py_False);
    Py_DECREF(flow);
    Py_DECREF(key);
    Py_DECREF(reverse);
    return result;
error:
    Py_XDECREF(flow);
    Py_XDECREF(reverse);
    Py_DECREF(key);
    return NULL;
}

/* lookup(layer, ts) -> (flow, to_server), as FlowTable.lookup: a packet of a flow in the
 * index and not idle is accounted for here; anything else (a new flow, an embryo, an idle
 * flow, an odd layer) goes to the twin's lookup before anything is changed. */
static PyObject *FastPath_lookup(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *layer, *ts_obj, *src, *dst, *key, *flow, *value, *result;
    Py_ssize_t size;
    long proto, sport, dport, flags, state;
    double ts, last, touched;
    int ok = 1, to_server;
    char *out;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "lookup(layer, ts)");
        return NULL;
    }
    layer = args[0];
    ts_obj = args[1];
    if (Py_TYPE(layer) != (PyTypeObject *)fp->layer_type || !PyFloat_CheckExact(ts_obj))
        goto fallback;
    ts = PyFloat_AS_DOUBLE(ts_obj);
    proto = small(layer_slot(fp, layer, LK_PROTO), &ok);
    sport = small(layer_slot(fp, layer, LK_SPORT), &ok);
    dport = small(layer_slot(fp, layer, LK_DPORT), &ok);
    flags = small(layer_slot(fp, layer, LK_FLAGS), &ok);
    src = layer_slot(fp, layer, LK_SRC);
    dst = layer_slot(fp, layer, LK_DST);
    if (!ok || src == NULL || dst == NULL || !PyBytes_CheckExact(src) || !PyBytes_CheckExact(dst)
        || proto < 0 || proto > 255 || sport < 0 || sport > 0xFFFF || dport < 0
        || dport > 0xFFFF)
        goto fallback;
    size = PyBytes_GET_SIZE(src) + PyBytes_GET_SIZE(dst) + 4 + (proto != 6);
    key = PyBytes_FromStringAndSize(NULL, size);
    if (key == NULL)
        return NULL;
    out = PyBytes_AS_STRING(key);
    memcpy(out, PyBytes_AS_STRING(src), (size_t)PyBytes_GET_SIZE(src));
    out += PyBytes_GET_SIZE(src);
    memcpy(out, PyBytes_AS_STRING(dst), (size_t)PyBytes_GET_SIZE(dst));
    out += PyBytes_GET_SIZE(dst);
    out[0] = (char)(sport >> 8);
    out[1] = (char)sport;
    out[2] = (char)(dport >> 8);
    out[3] = (char)dport;
    if (proto != 6)
        out[4] = (char)proto;
    flow = PyDict_GetItemWithError(fp->index, key);
    if (flow == NULL && !PyErr_Occurred() && fp->table != NULL && fp->make_flows
        && PyBytes_GET_SIZE(src) == PyBytes_GET_SIZE(dst)) {
        result = lookup_new(fp, layer, key, proto, flags, ts_obj, ts);
        if (result != Py_None)
            return result; /* (flow, to_server), or NULL */
        Py_DECREF(result);
        goto fallback;
    }
    if (flow == NULL || Py_TYPE(flow) != (PyTypeObject *)fp->flow_type) {
        Py_DECREF(key);
        if (PyErr_Occurred())
            return NULL;
        goto fallback;
    }
    last = slot_double(fp, flow, S_LAST_TS);
    if (last == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_DECREF(key);
        goto fallback;
    }
    if (ts - last > fp->idle_timeout) {
        Py_DECREF(key);
        goto fallback; /* the same 5-tuple after a long silence: a new flow */
    }
    value = slot(fp, flow, S_TCP_STATE);
    state = small(value, &ok);
    touched = slot_double(fp, flow, S_TOUCHED);
    if (!ok || (touched == -1.0 && PyErr_Occurred())) {
        PyErr_Clear();
        Py_DECREF(key);
        goto fallback;
    }
    Py_INCREF(flow);
    to_server = is_forward(fp, flow, PyBytes_AS_STRING(key), size);
    Py_DECREF(key);
    if (ts - touched >= 1.0) {
        PyObject *done = PyObject_CallMethodOneArg(fp->flows, str_move_to_end,
                                                   slot(fp, flow, S_KEY));
        if (done == NULL)
            goto error;
        Py_DECREF(done);
        set_slot(fp, flow, S_TOUCHED, ts_obj);
    }
    set_slot(fp, flow, S_LAST_TS, ts_obj);
    if (increment(fp, flow, to_server ? S_PACKETS_TO_SERVER : S_PACKETS_TO_CLIENT) < 0)
        goto error;
    if (proto == 6) {
        if ((state != TCP_ESTABLISHED || flags & 0x04)
            && tcp_track(fp, flow, flags, to_server, state) < 0)
            goto error;
    } else {
        int established = PyObject_IsTrue(slot(fp, flow, S_ESTABLISHED));
        if (established < 0)
            goto error;
        if (!established) {
            int to_client = PyObject_IsTrue(slot(fp, flow, S_PACKETS_TO_CLIENT));
            int to_server_count = PyObject_IsTrue(slot(fp, flow, S_PACKETS_TO_SERVER));
            if (to_client < 0 || to_server_count < 0)
                goto error;
            if (to_client && to_server_count)
                set_slot(fp, flow, S_ESTABLISHED, Py_True);
        }
    }
    result = PyTuple_Pack(2, flow, to_server ? Py_True : Py_False);
    Py_DECREF(flow);
    return result;
error:
    Py_DECREF(flow);
    return NULL;
fallback:
    return PyObject_Vectorcall(fp->lookup, args, (size_t)nargs, NULL);
}

/* ---- the new-flow path: InspectionEngine._unheld, _new_flow and FlowTable.hatched ---- */

/* An integer attribute of an object (the flow table's counters); -1 with an error set. */
static long long_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    long number;
    if (value == NULL)
        return -1;
    number = PyLong_AsLong(value);
    Py_DECREF(value);
    if (number < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a counter below 0");
    return number;
}

static int set_long_attr(PyObject *obj, PyObject *name, long number)
{
    PyObject *value = PyLong_FromLong(number);
    int result;
    if (value == NULL)
        return -1;
    result = PyObject_SetAttr(obj, name, value);
    Py_DECREF(value);
    return result;
}

/* obj.name += delta on an integer attribute. */
static int add_attr(PyObject *obj, PyObject *name, long delta)
{
    long number = long_attr(obj, name);
    if (number == -1 && PyErr_Occurred())
        return -1;
    return set_long_attr(obj, name, number + delta);
}

/* The other direction's key of a 12-byte IPv4 TCP key. */
static PyObject *reverse_key(const char *key)
{
    char raw[12];
    memcpy(raw, key + 4, 4);
    memcpy(raw + 4, key, 4);
    memcpy(raw + 8, key + 10, 2);
    memcpy(raw + 10, key + 8, 2);
    return PyBytes_FromStringAndSize(raw, 12);
}

static inline void put_flow(FastPath *fp, PyObject *flow, int which, PyObject *value)
{
    keep(place_of(flow, fp->flow_offsets[which]), value);
}

/* Flow(key, reverse, proto, ts): a new reference, NULL on error. */
static PyObject *new_flow(FastPath *fp, PyObject *key, PyObject *reverse, PyObject *proto,
                          PyObject *ts_obj)
{
    PyObject *flow;
    int same;
    if (!fp->make_flows)
        return PyObject_CallFunctionObjArgs(fp->flow_type, key, reverse, proto, ts_obj, NULL);
    same = PyObject_RichCompareBool(key, reverse, Py_EQ);
    if (same < 0)
        return NULL;
    flow = ((PyTypeObject *)fp->flow_type)->tp_alloc((PyTypeObject *)fp->flow_type, 0);
    if (flow == NULL)
        return NULL;
    put_flow(fp, flow, F_KEY, key);
    put_flow(fp, flow, F_REVERSE_KEY, reverse);
    put_flow(fp, flow, F_FWD_KEY, same ? Py_None : key);
    put_flow(fp, flow, F_PROTO, proto);
    put_flow(fp, flow, F_FIRST_TS, ts_obj);
    put_flow(fp, flow, F_LAST_TS, ts_obj);
    put_flow(fp, flow, F_TOUCHED, ts_obj);
    put_flow(fp, flow, F_PACKETS_TO_SERVER, zero);
    put_flow(fp, flow, F_PACKETS_TO_CLIENT, zero);
    put_flow(fp, flow, F_ESTABLISHED, Py_False);
    put_flow(fp, flow, F_TCP_STATE, zero);
    put_flow(fp, flow, F_APP, empty);
    put_flow(fp, flow, F_APP_TRIES, zero);
    put_flow(fp, flow, F_SEL_S, Py_None);
    put_flow(fp, flow, F_SEL_C, Py_None);
    put_flow(fp, flow, F_FAST_S, Py_None);
    put_flow(fp, flow, F_FAST_C, Py_None);
    put_flow(fp, flow, F_GTP_OK, Py_False);
    put_flow(fp, flow, F_BITS, Py_None);
    put_flow(fp, flow, F_STREAMS, Py_None);
    put_flow(fp, flow, F_SIZES, Py_None);
    return flow;
}

/* The engine's _hatch(client, reverse, embryo): the flow an embryo stands for, as the full
 * path leaves it after its first segment (its plan's selections, followers and TCP state). */
static PyObject *hatch_flow(FastPath *fp, PyObject *client, PyObject *reverse, PyObject *embryo)
{
    PyObject *plan_obj, *plan, *flow, *value;
    unsigned long seq, next;
    Py_ssize_t at;
    long state;
    int reads;
    if (PyTuple_GET_SIZE(embryo) != 3 || !PyLong_CheckExact(PyTuple_GET_ITEM(embryo, 1))
        || !PyLong_CheckExact(PyTuple_GET_ITEM(embryo, 2)))
        goto twin;
    plan_obj = PyTuple_GET_ITEM(embryo, 2);
    at = PyLong_AsSsize_t(plan_obj);
    if (at < 0 || at >= PyList_GET_SIZE(fp->made_plans)) {
        PyErr_Clear();
        goto twin;
    }
    plan = PyList_GET_ITEM(fp->made_plans, at);
    seq = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(embryo, 1));
    if ((seq == (unsigned long)-1 && PyErr_Occurred()) || !PyTuple_CheckExact(plan)
        || PyTuple_GET_SIZE(plan) != 6) {
        PyErr_Clear();
        goto twin;
    }
    reads = PyObject_IsTrue(PyTuple_GET_ITEM(plan, 2));
    if (reads < 0)
        return NULL;
    state = PyLong_AsLong(PyTuple_GET_ITEM(plan, 4));
    if (state == -1 && PyErr_Occurred())
        return NULL;
    Py_INCREF(plan);
    flow = new_flow(fp, client, reverse, six, PyTuple_GET_ITEM(embryo, 0));
    if (flow == NULL) {
        Py_DECREF(plan);
        return NULL;
    }
    put_flow(fp, flow, F_PACKETS_TO_SERVER, one);
    value = PyLong_FromLong(state);
    if (value == NULL)
        goto error;
    put_flow(fp, flow, F_TCP_STATE, value);
    Py_DECREF(value);
    put_flow(fp, flow, F_SEL_S, PyTuple_GET_ITEM(plan, 0));
    put_flow(fp, flow, F_FAST_S, PyTuple_GET_ITEM(plan, 0));
    put_flow(fp, flow, F_SEL_C, PyTuple_GET_ITEM(plan, 1));
    put_flow(fp, flow, F_FAST_C, PyTuple_GET_ITEM(plan, 1));
    put_flow(fp, flow, F_GTP_OK, PyTuple_GET_ITEM(plan, 5));
    next = (seq + 1) & 0xFFFFFFFFul;
    if (reads) { /* opened on the first payload */
        value = Py_BuildValue("[Ok]", Py_None, next);
        if (value == NULL)
            goto error;
        put_flow(fp, flow, F_STREAMS, value);
        Py_DECREF(value);
    }
    if (fp->sizes) {
        value = Py_BuildValue("[kkii]", seq, next, -1, -1);
        if (value == NULL)
            goto error;
        put_flow(fp, flow, F_SIZES, value);
        Py_DECREF(value);
    }
    Py_DECREF(plan);
    return flow;
error:
    Py_DECREF(plan);
    Py_DECREF(flow);
    return NULL;
twin:
    return NULL; /* (never: the engine's embryos are in this shape) */
}

/* FlowTable.hatched(key, ts) for a 12-byte key: a new reference to the flow an embryo under
 * the key (or the other direction's) hatches into, Py_None (a new reference) when there is
 * none, NULL on error. */
static PyObject *hatched(FastPath *fp, PyObject *key, double ts)
{
    PyObject *flows = fp->flows, *client = key, *reverse = NULL, *embryo, *hatch, *flow;
    PyObject *first;
    double born;
    int failed;

    embryo = PyDict_GetItemWithError(flows, key);
    if (embryo == NULL) {
        if (PyErr_Occurred())
            return NULL;
        client = reverse_key(PyBytes_AS_STRING(key));
        if (client == NULL)
            return NULL;
        reverse = key;
        Py_INCREF(reverse);
        embryo = PyDict_GetItemWithError(flows, client);
        if (embryo == NULL) {
            Py_DECREF(client);
            Py_DECREF(reverse);
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE;
        }
    } else {
        Py_INCREF(client);
    }
    Py_INCREF(embryo);
    hatch = PyObject_GetAttr(fp->table, str_hatch);
    if (hatch == NULL)
        goto error;
    if (!PyTuple_CheckExact(embryo) || hatch == Py_None) {
        Py_DECREF(hatch);
        Py_DECREF(embryo);
        Py_DECREF(client);
        Py_XDECREF(reverse);
        Py_RETURN_NONE; /* a flow (the caller found none in the index) */
    }
    first = PyTuple_GET_SIZE(embryo) > 0 ? PyTuple_GET_ITEM(embryo, 0) : NULL;
    born = first == NULL ? -1.0 : PyFloat_AsDouble(first);
    if (born == -1.0 && (first == NULL || PyErr_Occurred())) {
        if (first == NULL)
            PyErr_SetString(PyExc_ValueError, "an empty embryo");
        goto error_hatch;
    }
    if (ts - born > fp->idle_timeout) {
        failed = PyObject_DelItem(flows, client) < 0 || add_attr(fp->table, str_embryos, -1) < 0
            || add_attr(fp->table, str_expired, 1) < 0;
        Py_DECREF(hatch);
        Py_DECREF(embryo);
        Py_DECREF(client);
        Py_XDECREF(reverse);
        if (failed)
            return NULL;
        Py_RETURN_NONE;
    }
    if (add_attr(fp->table, str_embryos, -1) < 0)
        goto error_hatch;
    if (reverse == NULL) {
        reverse = reverse_key(PyBytes_AS_STRING(client));
        if (reverse == NULL)
            goto error_hatch;
    }
    if (fp->made_plans != NULL && fp->make_flows)
        flow = hatch_flow(fp, client, reverse, embryo);
    else
        flow = PyObject_CallFunctionObjArgs(hatch, client, reverse, embryo, NULL);
    if (flow == NULL && !PyErr_Occurred())
        flow = PyObject_CallFunctionObjArgs(hatch, client, reverse, embryo, NULL);
    Py_DECREF(hatch);
    Py_DECREF(embryo);
    if (flow == NULL)
        goto error_keys;
    if (PyObject_SetItem(flows, client, flow) < 0 || PyDict_SetItem(fp->index, client, flow) < 0
        || PyDict_SetItem(fp->index, reverse, flow) < 0) {
        Py_DECREF(flow);
        goto error_keys;
    }
    Py_DECREF(client);
    Py_DECREF(reverse);
    return flow;
error_hatch:
    Py_DECREF(hatch);
error:
    Py_DECREF(embryo);
error_keys:
    Py_DECREF(client);
    Py_XDECREF(reverse);
    return NULL;
}

/* The segment of a sorted table of starts that holds value: bisect_right(starts, value) - 1. */
static Py_ssize_t segment_of(const uint32_t *starts, Py_ssize_t count, uint32_t value)
{
    Py_ssize_t low = 0, high = count;
    while (low < high) {
        Py_ssize_t middle = (low + high) / 2;
        if (value < starts[middle])
            high = middle;
        else
            low = middle + 1;
    }
    return low - 1;
}

/* ---- what a new flow's first segment counts: ThresholdState.allow, PortScan.syn and
 * SynFlood.syn, compiled. They read and write the Python objects' own tables (their
 * OrderedDicts, through the mapping protocol and their methods, so that the order the
 * tables keep is theirs) and read their settings on each call, as the methods do. ---- */

static PyObject *str__entries, *str_max_entries, *str_track, *str_seconds, *str_count,
    *str_type, *str_threshold, *str_ports, *str_window, *str__seen, *str_limit,
    *str_period, *str__by_src, *str__by_dst, *str__tracked, *str_popitem, *str_detection,
    *str_by_src, *str_kind_detection_filter, *str_kind_limit, *str_kind_threshold;

/* table.popitem(last=False), its item dropped; -1 on error. */
static int drop_oldest(PyObject *table)
{
    PyObject *item = PyObject_CallMethodOneArg(table, str_popitem, Py_False);
    if (item == NULL)
        return -1;
    Py_DECREF(item);
    return 0;
}

/* Past limit entries, the table's oldest dropped; -1 on error. */
static int trim(PyObject *table, Py_ssize_t limit)
{
    Py_ssize_t size = PyObject_Length(table);
    if (size < 0)
        return -1;
    return size > limit ? drop_oldest(table) : 0;
}

/* table[key] = value (a key already there keeps its place), then trimmed to limit; -1 on
 * error. */
static int set_trimmed(PyObject *table, PyObject *key, PyObject *value, Py_ssize_t limit)
{
    return PyObject_SetItem(table, key, value) < 0 ? -1 : trim(table, limit);
}

/* _Bounded.put(key, value): set, moved to the end, the oldest dropped past its limit. */
static int bounded_put(PyObject *table, PyObject *key, PyObject *value)
{
    PyObject *moved;
    Py_ssize_t limit = attr_ssize(table, str_limit);
    if (limit == -1 && PyErr_Occurred())
        return -1;
    if (PyObject_SetItem(table, key, value) < 0)
        return -1;
    moved = PyObject_CallMethodOneArg(table, str_move_to_end, key);
    if (moved == NULL)
        return -1;
    Py_DECREF(moved);
    return trim(table, limit);
}

static double attr_double(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    double number;
    if (value == NULL)
        return -1.0;
    number = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return number;
}

/* ThresholdState.allow(sid, threshold, src, dst, ts): 1 (alert), 0, -1 on error. */
static int threshold_allows(PyObject *state, PyObject *sid, PyObject *threshold, PyObject *src,
                            PyObject *dst, PyObject *ts_obj, double ts)
{
    PyObject *entries = NULL, *track = NULL, *kind = NULL, *key = NULL, *entry, *value;
    double seconds, start_ts = ts;
    long long seen, count;
    Py_ssize_t limit;
    int result = -1, by_src, own_start = 0;
    PyObject *start = ts_obj;

    entries = PyObject_GetAttr(state, str__entries);
    track = PyObject_GetAttr(threshold, str_track);
    kind = PyObject_GetAttr(threshold, str_type);
    if (entries == NULL || track == NULL || kind == NULL)
        goto done;
    if (!PyUnicode_Check(kind)) {
        PyErr_SetString(PyExc_TypeError, "a threshold's type is a str");
        goto done;
    }
    seconds = attr_double(threshold, str_seconds);
    if (seconds == -1.0 && PyErr_Occurred())
        goto done;
    count = attr_ssize(threshold, str_count);
    if (count == -1 && PyErr_Occurred())
        goto done;
    by_src = PyObject_RichCompareBool(track, str_by_src, Py_EQ);
    if (by_src < 0)
        goto done;
    key = PyTuple_Pack(2, sid, by_src ? src : dst);
    if (key == NULL)
        goto done;
    entry = PyDict_GetItemWithError(entries, key);
    if (entry == NULL && PyErr_Occurred())
        goto done;
    if (entry != NULL && (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2)) {
        PyErr_SetString(PyExc_TypeError, "a threshold entry not of its shape");
        goto done;
    }
    if (entry != NULL) {
        start_ts = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 0));
        if (start_ts == -1.0 && PyErr_Occurred())
            goto done;
    }
    if (entry == NULL || ts - start_ts >= seconds || ts < start_ts) {
        start_ts = ts;
        seen = 1;
        limit = attr_ssize(state, str_max_entries);
        if (limit == -1 && PyErr_Occurred())
            goto done;
        value = Py_BuildValue("(Oi)", ts_obj, 1);
        if (value == NULL || set_trimmed(entries, key, value, limit) < 0) {
            Py_XDECREF(value);
            goto done;
        }
        Py_DECREF(value);
    } else {
        PyObject *moved;
        seen = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 1));
        if (seen == -1 && PyErr_Occurred())
            goto done;
        seen += 1;
        start = PyTuple_GET_ITEM(entry, 0);
        Py_INCREF(start); /* (the entry goes when its key is set again) */
        own_start = 1;
        moved = PyObject_CallMethodOneArg(entries, str_move_to_end, key);
        value = moved == NULL ? NULL : Py_BuildValue("(OL)", start, seen);
        Py_XDECREF(moved);
        if (value == NULL || PyObject_SetItem(entries, key, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(start);
            goto done;
        }
        Py_DECREF(value);
    }
    if (PyUnicode_Compare(kind, str_kind_detection_filter) == 0)
        result = seen > count;
    else if (PyUnicode_Compare(kind, str_kind_limit) == 0)
        result = seen <= count;
    else if (PyUnicode_Compare(kind, str_kind_threshold) == 0) {
        result = 0;
        if (seen >= count) {
            int held = PyDict_Contains(entries, key);
            result = 1;
            if (held > 0) {
                value = Py_BuildValue("(Oi)", start, 0);
                if (value == NULL || PyObject_SetItem(entries, key, value) < 0)
                    result = -1;
                Py_XDECREF(value);
            } else if (held < 0) {
                result = -1;
            }
        }
    } else {
        result = seen == count; /* both */
    }
    if (PyErr_Occurred())
        result = -1;
    if (own_start)
        Py_DECREF(start);
done:
    Py_XDECREF(entries);
    Py_XDECREF(track);
    Py_XDECREF(kind);
    Py_XDECREF(key);
    return result;
}

/* PortScan.syn(ts, src, dport): a new reference to its Detection or to None; NULL on error. */
static PyObject *port_scan_syn(PyObject *detector, PyObject *ts_obj, double ts, PyObject *src,
                               unsigned int dport)
{
    PyObject *seen = NULL, *state, *ports_map = NULL, *port = NULL, *list = NULL, *result = NULL;
    Py_ssize_t ports, size;
    double window, last;

    seen = PyObject_GetAttr(detector, str__seen);
    if (seen == NULL)
        return NULL;
    ports = attr_ssize(detector, str_ports);
    window = attr_double(detector, str_window);
    port = PyLong_FromUnsignedLong(dport);
    if (port == NULL || PyErr_Occurred())
        goto done;
    state = PyDict_GetItemWithError(seen, src);
    if (state == NULL && PyErr_Occurred())
        goto done;
    if (state == NULL) {
        if (ports >= 1) { /* a source's first SYN: its port and time, until a second port */
            PyObject *first = PyTuple_Pack(2, port, ts_obj);
            Py_ssize_t limit = attr_ssize(seen, str_limit);
            if (first == NULL || (limit == -1 && PyErr_Occurred())
                || set_trimmed(seen, src, first, limit) < 0) {
                Py_XDECREF(first);
                goto done;
            }
            Py_DECREF(first);
            result = Py_NewRef(Py_None);
            goto done;
        }
        list = Py_BuildValue("[Nd]", PyDict_New(), -Py_HUGE_VAL);
        if (list == NULL || bounded_put(seen, src, list) < 0)
            goto done;
    } else if (PyTuple_CheckExact(state)) {
        if (PyTuple_GET_SIZE(state) != 2) {
            PyErr_SetString(PyExc_TypeError, "a port scan's first SYN not of its shape");
            goto done;
        }
        ports_map = PyDict_New();
        if (ports_map == NULL
            || PyDict_SetItem(ports_map, PyTuple_GET_ITEM(state, 0), PyTuple_GET_ITEM(state, 1))
                   < 0)
            goto done;
        list = Py_BuildValue("[Od]", ports_map, -Py_HUGE_VAL);
        Py_CLEAR(ports_map);
        if (list == NULL || PyObject_SetItem(seen, src, list) < 0) /* in place */
            goto done;
    } else {
        list = Py_NewRef(state);
    }
    if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) != 2
        || !PyDict_CheckExact(PyList_GET_ITEM(list, 0))) {
        PyErr_SetString(PyExc_TypeError, "a port scan's state not of its shape");
        goto done;
    }
    last = PyFloat_AsDouble(PyList_GET_ITEM(list, 1));
    if (last == -1.0 && PyErr_Occurred())
        goto done;
    if (ts - last < window) { /* reported in this window already */
        result = Py_NewRef(Py_None);
        goto done;
    }
    ports_map = Py_NewRef(PyList_GET_ITEM(list, 0));
    if (PyDict_SetItem(ports_map, port, ts_obj) < 0)
        goto done;
    if (PyDict_GET_SIZE(ports_map) <= ports) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    { /* past the limit: the ports last seen before the window forgotten */
        double horizon = ts - window;
        PyObject *old = PyList_New(0), *key, *value;
        Py_ssize_t at = 0, i;
        if (old == NULL)
            goto done;
        while (PyDict_Next(ports_map, &at, &key, &value)) {
            double when = PyFloat_AsDouble(value);
            if ((when == -1.0 && PyErr_Occurred())
                || (when < horizon && PyList_Append(old, key) < 0)) {
                Py_DECREF(old);
                goto done;
            }
        }
        for (i = 0; i < PyList_GET_SIZE(old); i++)
            if (PyDict_DelItem(ports_map, PyList_GET_ITEM(old, i)) < 0) {
                Py_DECREF(old);
                goto done;
            }
        Py_DECREF(old);
    }
    size = PyDict_GET_SIZE(ports_map);
    if (size <= ports) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (PyList_SetItem(list, 1, Py_NewRef(ts_obj)) < 0)
        goto done;
    PyDict_Clear(ports_map); /* the next window counts afresh */
    result = PyObject_CallMethod(detector, "detection", "n", size);
done:
    Py_XDECREF(seen);
    Py_XDECREF(port);
    Py_XDECREF(list);
    Py_XDECREF(ports_map);
    return result;
}

/* One address's window in a SynFlood table, counting this SYN (the method's steps for
 * by_src or by_dst): a new reference to the (start, count, alerted) tuple; NULL on error. */
static PyObject *flood_count(PyObject *table, PyObject *addr, PyObject *ts_obj, double ts,
                             double period, Py_ssize_t tracked)
{
    PyObject *entry = PyDict_GetItemWithError(table, addr), *value;
    double start;
    long long count;
    if (entry == NULL) {
        if (PyErr_Occurred())
            return NULL;
        value = Py_BuildValue("(OiO)", ts_obj, 1, Py_False);
        if (value == NULL || set_trimmed(table, addr, value, tracked) < 0) {
            Py_XDECREF(value);
            return NULL;
        }
        return value;
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
        PyErr_SetString(PyExc_TypeError, "a SYN flood window not of its shape");
        return NULL;
    }
    start = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 0));
    if (start == -1.0 && PyErr_Occurred())
        return NULL;
    if (ts - start >= period || ts < start) {
        value = Py_BuildValue("(OiO)", ts_obj, 1, Py_False);
        if (value == NULL || bounded_put(table, addr, value) < 0) {
            Py_XDECREF(value);
            return NULL;
        }
        return value;
    }
    count = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 1));
    if (count == -1 && PyErr_Occurred())
        return NULL;
    value = Py_BuildValue("(OLO)", PyTuple_GET_ITEM(entry, 0), count + 1,
                          PyTuple_GET_ITEM(entry, 2));
    if (value == NULL || PyObject_SetItem(table, addr, value) < 0) {
        Py_XDECREF(value);
        return NULL;
    }
    return value;
}

/* The window's count over limit, and whether it was reported: -1 on error. */
static int window_over(PyObject *window, long long limit, int *alerted)
{
    long long count = PyLong_AsLongLong(PyTuple_GET_ITEM(window, 1));
    if (count == -1 && PyErr_Occurred())
        return -1;
    *alerted = PyObject_IsTrue(PyTuple_GET_ITEM(window, 2));
    if (*alerted < 0)
        return -1;
    return count > limit;
}

/* The window marked reported in its table. */
static int window_reported(PyObject *table, PyObject *addr, PyObject *window)
{
    PyObject *value = Py_BuildValue("(OOO)", PyTuple_GET_ITEM(window, 0),
                                    PyTuple_GET_ITEM(window, 1), Py_True);
    int result = value == NULL ? -1 : PyObject_SetItem(table, addr, value);
    Py_XDECREF(value);
    return result;
}

/* SynFlood.syn(ts, src, dst): a new reference to its Detection or to None; NULL on error. */
static PyObject *syn_flood_syn(PyObject *detector, PyObject *ts_obj, double ts, PyObject *src,
                               PyObject *dst)
{
    PyObject *by_src_table = NULL, *by_dst_table = NULL, *by_src = NULL, *by_dst = NULL,
             *result = NULL;
    double period;
    Py_ssize_t limit, tracked;
    int src_over, dst_over, src_alerted, dst_alerted;

    period = attr_double(detector, str_period);
    limit = attr_ssize(detector, str_limit);
    tracked = attr_ssize(detector, str__tracked);
    if (PyErr_Occurred())
        return NULL;
    by_src_table = PyObject_GetAttr(detector, str__by_src);
    by_dst_table = PyObject_GetAttr(detector, str__by_dst);
    if (by_src_table == NULL || by_dst_table == NULL)
        goto done;
    by_src = flood_count(by_src_table, src, ts_obj, ts, period, tracked);
    if (by_src == NULL)
        goto done;
    by_dst = flood_count(by_dst_table, dst, ts_obj, ts, period, tracked);
    if (by_dst == NULL)
        goto done;
    src_over = window_over(by_src, limit, &src_alerted);
    dst_over = window_over(by_dst, limit, &dst_alerted);
    if (src_over < 0 || dst_over < 0)
        goto done;
    if (src_over) { /* a flood from this source: its destination's flood is the same event */
        if (dst_over && !dst_alerted && window_reported(by_dst_table, dst, by_dst) < 0)
            goto done;
        if (!src_alerted) {
            if (window_reported(by_src_table, src, by_src) < 0)
                goto done;
            result = PyObject_CallMethodOneArg(detector, str_detection, Py_True);
            goto done;
        }
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (dst_over && !dst_alerted) {
        if (window_reported(by_dst_table, dst, by_dst) < 0)
            goto done;
        result = PyObject_CallMethodOneArg(detector, str_detection, Py_False);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(by_src_table);
    Py_XDECREF(by_dst_table);
    Py_XDECREF(by_src);
    Py_XDECREF(by_dst);
    return result;
}

/* _flow_fire(ts, data, key, plan) with the counters handed over (new_flow_path's counters:
 * the ThresholdState, the PortScan or None, the SynFlood or None): the alerting rules'
 * thresholds and (a SYN) the SYN detectors count the segment here; its alerts made by the
 * engine's _flow_alerts, if any. A new reference; NULL on error. */
/* fields.segment_tests_hold(tests, data, ip): whether every header test (field's code, 0
 * range or 1 flags, low or bits, high or modifier's code, negated) holds of the IPv4 packet
 * at data[ip:] (a header of 20 bytes, then TCP). 1, 0, -1 on error (a test not of the
 * shape). */
static int segment_tests_hold(PyObject *tests, const unsigned char *data, Py_ssize_t ip)
{
    Py_ssize_t i;
    if (!PyTuple_CheckExact(tests))
        goto shape;
    for (i = 0; i < PyTuple_GET_SIZE(tests); i++) {
        PyObject *test = PyTuple_GET_ITEM(tests, i);
        long kind;
        long long low, high;
        int64_t number;
        int negated, holds;
        if (!PyTuple_CheckExact(test) || PyTuple_GET_SIZE(test) != 5)
            goto shape;
        number = segment_field(PyLong_AsLong(PyTuple_GET_ITEM(test, 0)), data, ip);
        kind = PyLong_AsLong(PyTuple_GET_ITEM(test, 1));
        negated = PyObject_IsTrue(PyTuple_GET_ITEM(test, 4));
        if (PyErr_Occurred() || negated < 0)
            return -1;
        if (number < 0)
            goto shape;
        if (kind == 0) { /* a range: its bounds may be past a field's (an int of any size) */
            int above, below;
            PyObject *value = PyLong_FromLongLong(number);
            if (value == NULL)
                return -1;
            below = PyObject_RichCompareBool(PyTuple_GET_ITEM(test, 2), value, Py_LE);
            above = below > 0 ? PyObject_RichCompareBool(value, PyTuple_GET_ITEM(test, 3), Py_LE)
                              : below;
            Py_DECREF(value);
            if (below < 0 || above < 0)
                return -1;
            holds = (below && above) != negated;
        } else if (kind == 1) {
            low = PyLong_AsLongLong(PyTuple_GET_ITEM(test, 2));
            high = PyLong_AsLongLong(PyTuple_GET_ITEM(test, 3));
            if (PyErr_Occurred())
                return -1;
            holds = bits_hold(number, low, high);
        } else {
            goto shape;
        }
        if (!holds)
            return 0;
    }
    return 1;
shape:
    PyErr_SetString(PyExc_TypeError, "a segment's header tests: (code, kind, low, high, negated)");
    return -1;
}

static PyObject *opening_fire(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes,
                              Py_ssize_t ip, PyObject *key, PyObject *alerting, int syn,
                              unsigned int dport)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    PyObject *thresholds = PyTuple_GET_ITEM(fp->counters, 0);
    PyObject *port_scan = PyTuple_GET_ITEM(fp->counters, 1);
    PyObject *syn_flood = PyTuple_GET_ITEM(fp->counters, 2);
    PyObject *src = NULL, *dst = NULL, *fired = NULL, *scan = NULL, *flood = NULL;
    PyObject *result = NULL;
    Py_ssize_t i, count = PyTuple_GET_SIZE(alerting);

    if (!count && (!syn || (port_scan == Py_None && syn_flood == Py_None)))
        return Py_NewRef(fp->no_alerts);
    src = PyBytes_FromStringAndSize((const char *)data + ip + 12, 4);
    dst = PyBytes_FromStringAndSize((const char *)data + ip + 16, 4);
    if (src == NULL || dst == NULL)
        goto done;
    for (i = 0; i < count; i++) {
        PyObject *sig = PyTuple_GET_ITEM(alerting, i), *threshold, *sid;
        int allowed = 1;
        if (PyTuple_CheckExact(sig)) { /* (rule, tests): a rule on header fields */
            int holds = PyTuple_GET_SIZE(sig) == 2
                            ? segment_tests_hold(PyTuple_GET_ITEM(sig, 1), data, ip)
                            : -1;
            if (holds < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "a plan's rule: a rule or (rule, tests)");
                goto done;
            }
            if (!holds)
                continue;
            sig = PyTuple_GET_ITEM(sig, 0);
        }
        threshold = PyObject_GetAttr(sig, str_threshold);
        if (threshold == NULL)
            goto done;
        if (threshold != Py_None) {
            sid = PyObject_GetAttr(sig, str_sid);
            allowed = sid == NULL ? -1
                                  : threshold_allows(thresholds, sid, threshold, src, dst,
                                                     ts_obj, ts);
            Py_XDECREF(sid);
        }
        Py_DECREF(threshold);
        if (allowed < 0)
            goto done;
        if (allowed) {
            if (fired == NULL && (fired = PyList_New(0)) == NULL)
                goto done;
            if (PyList_Append(fired, sig) < 0)
                goto done;
        }
    }
    if (syn) {
        if (port_scan != Py_None
            && (scan = port_scan_syn(port_scan, ts_obj, ts, src, dport)) == NULL)
            goto done;
        if (syn_flood != Py_None
            && (flood = syn_flood_syn(syn_flood, ts_obj, ts, src, dst)) == NULL)
            goto done;
    }
    if (fired == NULL && (scan == NULL || scan == Py_None) && (flood == NULL || flood == Py_None)) {
        result = Py_NewRef(fp->no_alerts);
        goto done;
    }
    result = PyObject_CallFunctionObjArgs(fp->detected, ts_obj, bytes, key,
                                          fired == NULL ? Py_None : fired,
                                          scan == NULL ? Py_None : scan,
                                          flood == NULL ? Py_None : flood, NULL);
done:
    Py_XDECREF(src);
    Py_XDECREF(dst);
    Py_XDECREF(fired);
    Py_XDECREF(scan);
    Py_XDECREF(flood);
    return result;
}

/* _new_flow(ts, data, key, ip): a new reference to the alerts (a sequence), Py_None (a new
 * reference) where the full path is to take the packet, NULL on error. ip: 14, or 50 (a
 * G-PDU's inner packet). */
static PyObject *opening(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes, PyObject *key,
                         Py_ssize_t ip)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    Py_ssize_t total = u16(data, ip + 2), doff = data[ip + 32] >> 4, at;
    unsigned int flags = data[ip + 33];
    uint32_t src_n, dst_n;
    unsigned int sport, dport;
    unsigned long seq;
    long embryos, plan;
    PyObject *kind, *found, *embryo, *fired, *scan = NULL, *flood = NULL, *src, *dst;
    int held, syn;

    if (doff < 5 || total != 20 + (doff << 2) || ip + total > n)
        Py_RETURN_NONE; /* a payload, or a malformed or truncated header */
    if (PyDict_GET_SIZE(fp->hellos)) {
        held = PyDict_Contains(fp->hellos, key);
        if (held < 0)
            return NULL;
        if (held)
            Py_RETURN_NONE;
    }
    src_n = u32(data, ip + 12);
    dst_n = u32(data, ip + 16);
    sport = u16(data, ip + 20);
    dport = u16(data, ip + 22);
    seq = u32(data, ip + 24);
    embryos = long_attr(fp->table, str_embryos);
    if (embryos == -1 && PyErr_Occurred())
        return NULL;
    if (embryos) {
        PyObject *other = reverse_key(PyBytes_AS_STRING(key));
        if (other == NULL)
            return NULL;
        held = PyDict_Contains(fp->flows, other);
        Py_DECREF(other);
        if (held < 0)
            return NULL;
        if (held)
            Py_RETURN_NONE; /* the other end opened the flow: it hatches */
    }
    syn = flags & 0x02;
    if (!syn)
        seq = (seq - 1) & 0xFFFFFFFFul; /* its sender's count starts one before it */
    kind = PyTuple_New(7);
    if (kind == NULL)
        return NULL;
    PyTuple_SET_ITEM(kind, 0, PyLong_FromLong(flags));
    at = segment_of(fp->addr_starts, fp->addr_count, src_n);
    PyTuple_SET_ITEM(kind, 1, Py_NewRef(PyTuple_GET_ITEM(fp->addr_bits, at)));
    at = segment_of(fp->addr_starts, fp->addr_count, dst_n);
    PyTuple_SET_ITEM(kind, 2, Py_NewRef(PyTuple_GET_ITEM(fp->addr_bits, at)));
    at = segment_of(fp->port_starts, fp->port_count, sport);
    PyTuple_SET_ITEM(kind, 3, Py_NewRef(PyTuple_GET_ITEM(fp->port_bits, at)));
    at = segment_of(fp->port_starts, fp->port_count, dport);
    PyTuple_SET_ITEM(kind, 4, Py_NewRef(PyTuple_GET_ITEM(fp->port_bits, at)));
    PyTuple_SET_ITEM(kind, 5, Py_NewRef(sport == 53 || dport == 53 ? Py_True : Py_False));
    PyTuple_SET_ITEM(kind, 6, Py_NewRef(ip != 14 ? Py_True : Py_False));
    found = PyDict_GetItemWithError(fp->plans, kind);
    if (found != NULL) {
        Py_INCREF(found);
    } else if (PyErr_Occurred()) {
        Py_DECREF(kind);
        return NULL;
    } else {
        found = PyObject_CallFunctionObjArgs(fp->plan_of, kind, bytes, NULL);
    }
    Py_DECREF(kind);
    if (found == NULL)
        return NULL;
    plan = PyLong_AsLong(found);
    Py_DECREF(found);
    if (plan == -1 && PyErr_Occurred())
        return NULL;
    if (plan < 0)
        Py_RETURN_NONE;
    if (plan >= PyList_GET_SIZE(fp->alerting)) {
        PyErr_SetString(PyExc_IndexError, "a plan without its alerting rules");
        return NULL;
    }
    if (add_attr(fp->stats, str_full, 1) < 0)
        return NULL;
    /* the embryo (FlowTable.add_embryo) */
    if (table_sweep(fp, ts_obj, ts) < 0)
        return NULL;
    embryo = Py_BuildValue("(Okl)", ts_obj, seq, plan);
    if (embryo == NULL)
        return NULL;
    held = PyObject_SetItem(fp->flows, key, embryo);
    Py_DECREF(embryo);
    if (held < 0 || add_attr(fp->table, str_embryos, 1) < 0)
        return NULL;
    if (table_evict(fp) < 0)
        return NULL;
    fired = PyList_GET_ITEM(fp->alerting, plan);
    if (fp->counters != NULL && PyTuple_CheckExact(fired))
        return opening_fire(fp, ts_obj, ts, bytes, ip, key, fired, syn, dport);
    held = PyObject_IsTrue(fired);
    if (held < 0)
        return NULL;
    if (held)
        return PyObject_CallFunction(fp->fire, "OOOl", ts_obj, bytes, key, plan);
    if (!syn || (fp->scan == Py_None && fp->flood == Py_None))
        return Py_NewRef(fp->no_alerts);
    src = PyBytes_FromStringAndSize((const char *)data + ip + 12, 4);
    dst = PyBytes_FromStringAndSize((const char *)data + ip + 16, 4);
    if (src == NULL || dst == NULL)
        goto error;
    if (fp->scan != Py_None) {
        scan = PyObject_CallFunction(fp->scan, "OOI", ts_obj, src, dport);
        if (scan == NULL)
            goto error;
    }
    if (fp->flood != Py_None) {
        flood = PyObject_CallFunctionObjArgs(fp->flood, ts_obj, src, dst, NULL);
        if (flood == NULL)
            goto error;
    }
    Py_DECREF(src);
    Py_DECREF(dst);
    if ((scan == NULL || scan == Py_None) && (flood == NULL || flood == Py_None)) {
        Py_XDECREF(scan);
        Py_XDECREF(flood);
        return Py_NewRef(fp->no_alerts);
    }
    found = PyObject_CallFunctionObjArgs(fp->detected, ts_obj, bytes, key, Py_None,
                                         scan == NULL ? Py_None : scan,
                                         flood == NULL ? Py_None : flood, NULL);
    Py_XDECREF(scan);
    Py_XDECREF(flood);
    return found;
error:
    Py_XDECREF(src);
    Py_XDECREF(dst);
    Py_XDECREF(scan);
    return NULL;
}

/* Whether an embryo put in the table now would push the tunnel's own flow out: the table
 * full, its oldest entry the outer flow's. 1, 0, -1 on error. */
static int pushes_out(FastPath *fp, PyObject *outer)
{
    long limit = long_attr(fp->table, str_max_flows);
    Py_ssize_t size = PyObject_Size(fp->flows);
    PyObject *iterator, *oldest, *key;
    int same;
    if ((limit == -1 && PyErr_Occurred()) || size < 0)
        return -1;
    if (size < limit)
        return 0;
    iterator = PyObject_GetIter(fp->flows);
    if (iterator == NULL)
        return -1;
    oldest = PyIter_Next(iterator);
    Py_DECREF(iterator);
    if (oldest == NULL)
        return PyErr_Occurred() ? -1 : 0;
    key = slot(fp, outer, S_KEY);
    same = key == NULL ? -1 : PyObject_RichCompareBool(oldest, key, Py_EQ);
    Py_DECREF(oldest);
    return same;
}

/* Whether a G-PDU's inner addresses pass the GTP-U checks: its source or its destination in
 * the UE pools (GtpAnomaly.addresses_pass). */
static int pools_pass(const FastPath *fp, uint32_t src, uint32_t dst)
{
    Py_ssize_t i;
    if (fp->pools_any)
        return 1;
    for (i = 0; i < fp->pool_count; i++) {
        uint32_t first = fp->pools[2 * i], last = fp->pools[2 * i + 1];
        if ((src >= first && src <= last) || (dst >= first && dst <= last))
            return 1;
    }
    return 0;
}

/* _unheld(ts, data, key) and what follows it in process (ip 14, outer NULL), or the engine's
 * _gtp_unheld(ts, data, end, outer) for a G-PDU's inner packet (ip 50, its outer flow): True
 * (an embryo hatched and the packet taken as fast_tcp takes it), False (the full path takes
 * the packet), or the alerts of a new flow's first segment (a new reference each); NULL on
 * error. A packet whose inner flow opens on the new-flow path passes the GTP-U checks and
 * leaves the tunnel's flow in the table. whole: the packet is whole (else it is not taken).
 * The key: a new reference, given up here. */
static PyObject *unheld(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes,
                        PyObject *key, Py_ssize_t end, int whole, Py_ssize_t ip,
                        PyObject *outer)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    unsigned int flags = data[ip + 33];
    PyObject *flow, *found;
    long embryos;
    int held, result;

    if (fp->table == NULL) {
        Py_DECREF(key);
        Py_RETURN_FALSE;
    }
    embryos = long_attr(fp->table, str_embryos);
    if (embryos == -1 && PyErr_Occurred())
        goto error;
    held = embryos ? PyDict_Contains(fp->flows, key) : 0;
    if (held < 0)
        goto error;
    if (held) {
        flow = hatched(fp, key, ts);
    } else {
        if (((flags & 0x17) == 0x02 || !(flags & 0x02)) && fp->flow_on
            && (outer == NULL || pools_pass(fp, u32(data, ip + 12), u32(data, ip + 16)))) {
            held = outer == NULL ? 0 : pushes_out(fp, outer);
            if (held < 0)
                goto error;
            if (held) {
                Py_DECREF(key);
                Py_RETURN_FALSE;
            }
            found = opening(fp, ts_obj, ts, bytes, key, ip);
            if (found != Py_None) {
                Py_DECREF(key);
                return found; /* the alerts, or NULL */
            }
            Py_DECREF(found);
            embryos = long_attr(fp->table, str_embryos);
            if (embryos == -1 && PyErr_Occurred())
                goto error;
        }
        flow = embryos ? hatched(fp, key, ts) : Py_NewRef(Py_None);
    }
    Py_DECREF(key);
    if (flow == NULL)
        return NULL;
    held = flow != Py_None;
    Py_DECREF(flow);
    if (!held || !whole)
        Py_RETURN_FALSE;
    result = fast_tcp(fp, ts_obj, ts, bytes, ip, end, outer != NULL, NULL);
    if (result < 0)
        return NULL;
    return PyBool_FromLong(result == 1);
error:
    Py_DECREF(key);
    return NULL;
}

/* A table of segment starts (a list of ints below 2**32) as an array; NULL on error. */
static uint32_t *starts_array(PyObject *list, Py_ssize_t *count)
{
    Py_ssize_t i, size;
    uint32_t *out;
    if (!PyList_Check(list) || PyList_GET_SIZE(list) == 0) {
        PyErr_SetString(PyExc_TypeError, "segment starts: a list of ints, the first 0");
        return NULL;
    }
    size = PyList_GET_SIZE(list);
    out = PyMem_New(uint32_t, (size_t)size);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < size; i++) {
        unsigned long value = PyLong_AsUnsignedLong(PyList_GET_ITEM(list, i));
        if ((value == (unsigned long)-1 && PyErr_Occurred()) || value > 0xFFFFFFFFul
            || (i == 0 && value != 0) || (i > 0 && value <= out[i - 1])) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "segment starts: increasing, the first 0");
            PyMem_Free(out);
            return NULL;
        }
        out[i] = (uint32_t)value;
    }
    *count = size;
    return out;
}

/* One (starts, bits) segment table: the starts as an array, the bits as a tuple. */
static int segments(PyObject *pair, uint32_t **starts, Py_ssize_t *count, PyObject **bits)
{
    PyObject *tuple;
    uint32_t *array;
    Py_ssize_t size;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "a segment table: (starts, bits)");
        return -1;
    }
    array = starts_array(PyTuple_GET_ITEM(pair, 0), &size);
    if (array == NULL)
        return -1;
    tuple = PySequence_Tuple(PyTuple_GET_ITEM(pair, 1));
    if (tuple == NULL || PyTuple_GET_SIZE(tuple) != size) {
        if (tuple != NULL)
            PyErr_SetString(PyExc_ValueError, "a segment table: as many bits as starts");
        Py_XDECREF(tuple);
        PyMem_Free(array);
        return -1;
    }
    PyMem_Free(*starts);
    *starts = array;
    *count = size;
    Py_XSETREF(*bits, tuple);
    return 0;
}

/* The UE pools of the GTP-U checks: None (no checks, or no pools: any address passes), or
 * a tuple of IPv4 (first, last) pairs. 0, -1 on error. */
static int ue_pools(FastPath *fp, PyObject *pools)
{
    Py_ssize_t i, count;
    uint32_t *ranges;
    if (pools == Py_None) {
        fp->pools_any = 1;
        return 0;
    }
    if (!PyTuple_Check(pools)) {
        PyErr_SetString(PyExc_TypeError, "pools: None or a tuple of (first, last) pairs");
        return -1;
    }
    count = PyTuple_GET_SIZE(pools);
    ranges = PyMem_New(uint32_t, (size_t)(2 * count + 1));
    if (ranges == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < count; i++) {
        PyObject *pair = PyTuple_GET_ITEM(pools, i);
        unsigned long first, last;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "pools: (first, last) pairs");
            PyMem_Free(ranges);
            return -1;
        }
        first = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(pair, 0));
        last = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(pair, 1));
        if (PyErr_Occurred() || first > 0xFFFFFFFFul || last > 0xFFFFFFFFul) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "pools: IPv4 addresses");
            PyMem_Free(ranges);
            return -1;
        }
        ranges[2 * i] = (uint32_t)first;
        ranges[2 * i + 1] = (uint32_t)last;
    }
    PyMem_Free(fp->pools);
    fp->pools = ranges;
    fp->pool_count = count;
    fp->pools_any = 0;
    return 0;
}

static PyObject *FastPath_new_flow_path(FastPath *fp, PyObject *args, PyObject *kwargs)
{
    PyObject *table, *stats, *hellos, *plans, *plan_of, *addr, *ports, *alerting, *scan, *flood;
    PyObject *fire, *detected, *no_alerts, *made, *slots, *counters = NULL, *pools = Py_None;
    int on, sizes;
    static char *names[] = {"table",     "stats",    "hellos", "plans",    "plan_of",  "addr",
                            "ports",     "alerting", "scan",   "flood",    "fire",     "detected",
                            "no_alerts", "on",       "made",   "sizes",    "counters", "pools",
                            NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!O!OO!O!O!OOOOOpO!p|O!O:new_flow_path",
                                     names, &table, &stats, &PyDict_Type, &hellos, &PyDict_Type,
                                     &plans, &plan_of, &PyTuple_Type, &addr, &PyTuple_Type, &ports,
                                     &PyList_Type, &alerting, &scan, &flood, &fire, &detected,
                                     &no_alerts, &on, &PyList_Type, &made, &sizes, &PyTuple_Type,
                                     &counters, &pools))
        return NULL;
    if (ue_pools(fp, pools) < 0)
        return NULL;
    if (counters != NULL && PyTuple_GET_SIZE(counters) != 3) {
        PyErr_SetString(PyExc_TypeError, "counters: (thresholds, port scan, SYN flood)");
        return NULL;
    }
    /* flows are made here only if the class has exactly the slots flow_names lists */
    fp->make_flows = 0;
    slots = PyObject_GetAttrString(fp->flow_type, "__slots__");
    if (slots == NULL) {
        PyErr_Clear();
    } else {
        PyObject *mine = PyFrozenSet_New(slots), *theirs = PyFrozenSet_New(NULL);
        int i, same = 0;
        for (i = 0; theirs != NULL && i < F_COUNT; i++) {
            PyObject *name = PyUnicode_FromString(flow_names[i]);
            if (name == NULL || PySet_Add(theirs, name) < 0)
                Py_CLEAR(theirs);
            Py_XDECREF(name);
        }
        if (mine != NULL && theirs != NULL && PySequence_Size(slots) == F_COUNT)
            same = PyObject_RichCompareBool(mine, theirs, Py_EQ);
        Py_XDECREF(mine);
        Py_XDECREF(theirs);
        Py_DECREF(slots);
        if (same > 0
            && slot_offsets(fp->flow_type, "flow_type", flow_names, F_COUNT, fp->flow_offsets)
                   == 0)
            fp->make_flows = 1;
        PyErr_Clear();
    }
    /* the counts of the Stats before added to it, at its own slots' offsets */
    if ((fp->stats != NULL && flush_counts(fp) < 0)
        || slot_offsets((PyObject *)Py_TYPE(stats), "stats", stat_names, 2, fp->stat_offsets) < 0
        || segments(addr, &fp->addr_starts, &fp->addr_count, &fp->addr_bits) < 0
        || segments(ports, &fp->port_starts, &fp->port_count, &fp->port_bits) < 0)
        return NULL;
    keep(&fp->table, table);
    keep(&fp->stats, stats);
    keep(&fp->hellos, hellos);
    keep(&fp->plans, plans);
    keep(&fp->plan_of, plan_of);
    keep(&fp->alerting, alerting);
    keep(&fp->scan, scan);
    keep(&fp->flood, flood);
    keep(&fp->fire, fire);
    keep(&fp->detected, detected);
    keep_x(&fp->counters, counters);
    keep(&fp->no_alerts, no_alerts);
    keep(&fp->made_plans, made);
    fp->flow_on = on;
    fp->sizes = sizes;
    Py_RETURN_NONE;
}

/* ---- the entry point ----------------------------------------------------------------- */

static PyObject *take_packet(FastPath *fp, PyObject *const *args)
{
    PyObject *ts_obj, *bytes, *key = NULL;
    const unsigned char *data;
    Py_ssize_t n, end;
    double ts;
    int result;

    ts_obj = args[0];
    bytes = args[1];
    if (!PyBytes_CheckExact(bytes))
        Py_RETURN_FALSE; /* the full path reads any buffer */
    ts = PyFloat_CheckExact(ts_obj) ? PyFloat_AS_DOUBLE(ts_obj) : PyFloat_AsDouble(ts_obj);
    if (ts == -1.0 && PyErr_Occurred())
        return NULL;
    data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    n = PyBytes_GET_SIZE(bytes);
    if (n < 54 || data[12] != 0x08 || data[13] != 0x00 || data[14] != 0x45 || data[20] & 0x3F
        || data[21])
        Py_RETURN_FALSE;
    if (data[23] == 6) {
        end = 14 + u16(data, 16);
        if (end > n) {
            /* the twin looks the key up first: a packet without a flow is still reported */
            int held;
            key = PyBytes_FromStringAndSize((const char *)data + 26, 12);
            if (key == NULL)
                return NULL;
            held = PyDict_Contains(fp->index, key);
            Py_DECREF(key);
            if (held < 0)
                return NULL;
            if (held)
                Py_RETURN_FALSE;
            key = PyBytes_FromStringAndSize((const char *)data + 26, 12);
            if (key == NULL || fp->table == NULL)
                return key;
            return unheld(fp, ts_obj, ts, bytes, key, end, 0, 14, NULL);
        }
        result = fast_tcp(fp, ts_obj, ts, bytes, 14, end, 0, &key);
        if (result < 0)
            return NULL;
        if (result == 2)
            return fp->table == NULL ? key : unheld(fp, ts_obj, ts, bytes, key, end, 1, 14, NULL);
        return PyBool_FromLong(result);
    }
    if (data[23] == 17 && data[36] == 0x08 && data[37] == 0x68) {
        PyObject *alerts = NULL;
        result = fast_gtp(fp, ts_obj, ts, bytes, &alerts);
        if (result < 0)
            return NULL;
        if (result == 3)
            return alerts; /* the inner packet's, on the new-flow path */
        return PyBool_FromLong(result);
    }
    Py_RETURN_FALSE;
}

/* take(ts, data): once the engine has handed its Stats over (new_flow_path()), the packet is
 * counted here (stats.packets; stats.fast when taken; added to them by flush_stats()), as
 * process() counts it, and a packet taken gives what process() returns for it (no_alerts)
 * instead of True. */
static PyObject *FastPath_take(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take(ts, data)");
        return NULL;
    }
    if (fp->stats == NULL)
        return take_packet(fp, args);
    fp->counted[0]++;
    result = take_packet(fp, args);
    if (result == Py_True) {
        Py_DECREF(result);
        fp->counted[1]++;
        return Py_NewRef(fp->no_alerts);
    }
    return result;
}

/* process(ts, data, linktype): the engine's process() once this fast path is loaded: a frame
 * of link type 1 (Ethernet) is take()n; one take leaves, or of another link type (counted
 * here), goes to the engine's full path (full_path()). */
static PyObject *FastPath_process(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    int ethernet;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "process(ts, data, linktype)");
        return NULL;
    }
    if (fp->full == NULL || fp->stats == NULL) {
        PyErr_SetString(PyExc_TypeError, "process: no full path (full_path())");
        return NULL;
    }
    if (PyLong_CheckExact(args[2])) {
        int overflow;
        long linktype = PyLong_AsLongAndOverflow(args[2], &overflow);
        ethernet = !overflow && linktype == 1;
    } else if ((ethernet = PyObject_RichCompareBool(args[2], one, Py_EQ)) < 0) {
        return NULL;
    }
    if (ethernet) {
        PyObject *taken = FastPath_take(fp, args, 2);
        if (taken != Py_False)
            return taken; /* (its alerts, or NULL) */
        Py_DECREF(taken);
    } else {
        fp->counted[0]++;
    }
    return PyObject_Vectorcall(fp->full, args, 3, NULL);
}

static PyObject *FastPath_flush_stats(FastPath *fp, PyObject *unused)
{
    (void)unused;
    if (fp->stats != NULL && flush_counts(fp) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *FastPath_full_path(FastPath *fp, PyObject *full)
{
    if (!PyCallable_Check(full)) {
        PyErr_SetString(PyExc_TypeError, "full_path(full): a callable");
        return NULL;
    }
    keep(&fp->full, full);
    Py_RETURN_NONE;
}

/* ---- the rule driver: engine._rule_hits --------------------------------------------- */

/* RuleHits(icmp_matches, head_holds, contents_match, rule_matches, twin).hits(layer, group,
 * established, flags, payload, buffers) is the engine's _rule_hits: a group's plain rules
 * (their compiled header tests, or their contents), its anchored rules whose fast pattern is
 * in its place, and the candidates of its prefilters, each checked by the twin's functions
 * (match.py), in the twin's order. A group whose tables are not in the shape expected goes
 * to the twin (_rule_hits itself) before anything is checked. */

typedef struct {
    PyObject_HEAD
    PyObject *icmp_matches, *head_holds, *contents_match, *rule_matches, *twin;
} RuleHits;

static PyObject *str_pkt, *str_ip_packet;
static PyObject *str_checks, *str_plain_checks, *str_itype, *str_icode,
    *str_contents, *str_transforms;

/* Whether the group's anchored_fast entries are (rule, bytes, int >= 0, int >= 0, bool). */
static int anchored_shape(PyObject *fast)
{
    Py_ssize_t i;
    if (!PyList_CheckExact(fast))
        return 0;
    for (i = 0; i < PyList_GET_SIZE(fast); i++) {
        PyObject *entry = PyList_GET_ITEM(fast, i);
        Py_ssize_t low, high;
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 5
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 2))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 3))
            || !PyBool_Check(PyTuple_GET_ITEM(entry, 4)))
            return 0;
        low = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        high = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
        if (low < 0 || high < 0) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* Whether the plain checks are (rule, tests or None, size gate or None, packed header gate
 * or None). */
static int plain_shape(PyObject *plain)
{
    Py_ssize_t i;
    if (!PyTuple_CheckExact(plain))
        return 0;
    for (i = 0; i < PyTuple_GET_SIZE(plain); i++) {
        PyObject *entry = PyTuple_GET_ITEM(plain, i), *gate;
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4)
            return 0;
        gate = PyTuple_GET_ITEM(entry, 3);
        if (gate != Py_None && !PyBytes_CheckExact(gate))
            return 0;
        gate = PyTuple_GET_ITEM(entry, 2);
        if (gate != Py_None
            && (!PyTuple_CheckExact(gate) || PyTuple_GET_SIZE(gate) != 2
                || !PyLong_CheckExact(PyTuple_GET_ITEM(gate, 0))
                || !PyLong_CheckExact(PyTuple_GET_ITEM(gate, 1))))
            return 0;
    }
    return 1;
}

/* Truth of a call's result: 1, 0, -1 (error). Steals the result. */
static int truth_of(PyObject *result)
{
    int truth;
    if (result == NULL)
        return -1;
    truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* The ASCII lower case of data (bytes.lower): a new bytes object. */
static PyObject *lowered(PyObject *bytes)
{
    Py_ssize_t i, n = PyBytes_GET_SIZE(bytes);
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(bytes);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    unsigned char *to;
    if (out == NULL)
        return NULL;
    to = (unsigned char *)PyBytes_AS_STRING(out);
    for (i = 0; i < n; i++)
        to[i] = in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i];
    return out;
}

/* A plain rule's gate (match.rule_gate: its header tests' count and words, then its byte
 * tests' count and for each its offset, byte count, little-endian, bitmask, operator,
 * value, negated) made of a packet: its IPv4 header of 20 bytes and more (at least 40
 * bytes; NULL: the header tests are not made) and its payload of size bytes (NULL: the
 * byte tests are not made). 1: every test made holds, 0: one fails (the rule cannot match),
 * -1 on error. */
static int rule_gate_holds(PyObject *gate, const unsigned char *packet,
                           const unsigned char *payload, Py_ssize_t size)
{
    const int64_t *word, *last;
    int64_t count, i;
    Py_ssize_t length;
    if (!PyBytes_CheckExact(gate) || (length = PyBytes_GET_SIZE(gate)) % 8 || length < 16)
        goto shape;
    word = (const int64_t *)(const void *)PyBytes_AS_STRING(gate);
    last = word + length / 8;
    count = *word++;
    if (count < 0 || (last - word - 1) / 5 < count)
        goto shape;
    for (i = 0; i < count; i++, word += 5) {
        int test = packet != NULL ? word_test_holds(word, packet, 0) : 1;
        if (test <= 0) {
            if (test < 0)
                goto shape;
            return 0;
        }
    }
    count = *word++;
    if (count < 0 || (last - word) / 7 != count || (last - word) % 7)
        goto shape;
    for (i = 0; i < count && payload != NULL; i++, word += 7) {
        int64_t offset = word[0], bytes = word[1], op = word[4], value = word[5];
        uint64_t number = 0, mask = (uint64_t)word[3];
        int64_t k;
        int holds;
        if (offset < 0 || bytes < 1 || bytes > 4 || op < 0 || op > 6)
            goto shape;
        if (offset + bytes > size)
            return 0; /* too short to read: the test does not hold */
        for (k = 0; k < bytes; k++)
            number = word[2] ? number | (uint64_t)payload[offset + k] << (8 * k)
                             : number << 8 | payload[offset + k];
        if (mask) {
            number &= mask;
            while (!(mask & 1)) {
                number >>= 1;
                mask >>= 1;
            }
        }
        switch (op) {
        case 1: holds = number < (uint64_t)value; break;
        case 2: holds = number > (uint64_t)value; break;
        case 3: holds = number <= (uint64_t)value; break;
        case 4: holds = number >= (uint64_t)value; break;
        case 5: holds = (number & (uint64_t)value) != 0; break;
        case 6: holds = (number ^ (uint64_t)value) != 0; break;
        default: holds = number == (uint64_t)value; break;
        }
        if (holds == (word[6] != 0))
            return 0;
    }
    return 1;
shape:
    PyErr_SetString(PyExc_TypeError, "a rule gate: 64-bit words");
    return -1;
}

static PyObject *RuleHits_hits(RuleHits *rh, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *layer, *group, *established, *flags, *payload, *buffers;
    PyObject *checks = NULL, *plain = NULL, *fast = NULL, *prefilters = NULL, *hits = NULL;
    PyObject *numbers = NULL, *folded = NULL, *index = NULL, *table, *packet = NULL, *pkt;
    Py_ssize_t i, j, count, size;
    int truth, header = -1; /* whether ip:packet is an IPv4 header of 20 bytes and more */

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "hits(layer, group, established, flags, payload, buffers)");
        return NULL;
    }
    layer = args[0];
    group = args[1];
    established = args[2];
    flags = args[3];
    payload = args[4];
    buffers = args[5];
    if (!PyBool_Check(established) || !PyBytes_CheckExact(payload) || !PyDict_CheckExact(buffers))
        goto twin;
    checks = PyObject_GetAttr(group, str_checks);
    if (checks == NULL)
        return NULL;
    if (!PyTuple_CheckExact(checks) || PyTuple_GET_SIZE(checks) != 2)
        goto twin;
    table = PyTuple_GET_ITEM(checks, established == Py_True);
    if (!PyDict_CheckExact(table))
        goto twin;
    plain = PyDict_GetItemWithError(table, flags);
    if (plain != NULL) {
        Py_INCREF(plain);
    } else if (PyErr_Occurred()) {
        goto error;
    } else {
        plain = PyObject_CallMethodObjArgs(group, str_plain_checks, flags, established, NULL);
        if (plain == NULL)
            goto error;
    }
    fast = PyObject_GetAttr(group, str_anchored_fast);
    if (fast == NULL)
        goto error;
    index = PyObject_GetAttr(group, str_anchor_index);
    if (index == NULL)
        goto error;
    prefilters = PyObject_GetAttr(group, str_prefilters);
    if (prefilters == NULL)
        goto error;
    /* (a group with an AnchorIndex: its anchored rules are not read here, but through it) */
    if (!plain_shape(plain) || (index == Py_None && !anchored_shape(fast))
        || !PyList_CheckExact(prefilters))
        goto twin;
    hits = PyList_New(0);
    if (hits == NULL)
        goto error;
    /* the payload's size, as a rule's dsize reads it (-1: no payload buffer) */
    pkt = PyDict_GetItemWithError(buffers, str_pkt);
    if (pkt == NULL && PyErr_Occurred())
        goto error;
    size = pkt == NULL ? -1 : PyObject_Length(pkt);
    if (size < 0 && pkt != NULL)
        goto error;
    count = PyTuple_GET_SIZE(plain);
    for (i = 0; i < count; i++) {
        PyObject *entry = PyTuple_GET_ITEM(plain, i);
        PyObject *sig = PyTuple_GET_ITEM(entry, 0), *head = PyTuple_GET_ITEM(entry, 1);
        PyObject *gate = PyTuple_GET_ITEM(entry, 2), *value;
        int icmp;
        if (gate != Py_None) { /* its dsize: outside it, the rule cannot match */
            long long low = PyLong_AsLongLong(PyTuple_GET_ITEM(gate, 0));
            long long high = PyLong_AsLongLong(PyTuple_GET_ITEM(gate, 1));
            if ((low == -1 || high == -1) && PyErr_Occurred())
                goto error;
            if (size < low || size > high)
                continue;
        }
        if (PyTuple_GET_ITEM(entry, 3) != Py_None) {
            /* its rule gate: its header tests of the IPv4 header without options (and TCP's,
             * which a packet of another protocol, or a later fragment, never passes) and its
             * byte tests of the payload; failing one, the rule cannot match */
            if (header < 0) {
                packet = PyDict_GetItemWithError(buffers, str_ip_packet);
                if (packet == NULL && PyErr_Occurred())
                    goto error;
                header = packet != NULL && PyBytes_CheckExact(packet)
                         && PyBytes_GET_SIZE(packet) >= 40 && PyBytes_AS_STRING(packet)[0] == 0x45;
            }
            truth = rule_gate_holds(
                PyTuple_GET_ITEM(entry, 3),
                header ? (const unsigned char *)PyBytes_AS_STRING(packet) : NULL,
                pkt != NULL && PyBytes_CheckExact(pkt)
                    ? (const unsigned char *)PyBytes_AS_STRING(pkt)
                    : NULL,
                size);
            if (truth < 0)
                goto error;
            if (!truth)
                continue;
        }
        value = PyObject_GetAttr(sig, str_itype);
        if (value == NULL)
            goto error;
        icmp = value != Py_None;
        Py_DECREF(value);
        if (!icmp) {
            value = PyObject_GetAttr(sig, str_icode);
            if (value == NULL)
                goto error;
            icmp = value != Py_None;
            Py_DECREF(value);
        }
        if (icmp) {
            truth = truth_of(PyObject_CallFunctionObjArgs(rh->icmp_matches, sig, layer, NULL));
            if (truth < 0)
                goto error;
            if (!truth)
                continue;
        }
        if (head != Py_None) {
            if (numbers == NULL && (numbers = PyDict_New()) == NULL)
                goto error;
            truth = truth_of(
                PyObject_CallFunctionObjArgs(rh->head_holds, head, buffers, numbers, NULL));
        } else {
            value = PyObject_GetAttr(sig, str_contents);
            if (value == NULL)
                goto error;
            truth = PyObject_IsTrue(value);
            Py_DECREF(value);
            if (truth > 0)
                truth = truth_of(
                    PyObject_CallFunctionObjArgs(rh->contents_match, sig, buffers, NULL));
            else if (truth == 0)
                truth = 1;
        }
        if (truth < 0)
            goto error;
        if (truth && PyList_Append(hits, sig) < 0)
            goto error;
    }
    if (PyBytes_GET_SIZE(payload) && index != Py_None) {
        /* a large group's anchored rules whose fast pattern is in its place: found by its
         * AnchorIndex in one scan, in the group's order */
        PyObject *placed = index_placed(index, (const unsigned char *)PyBytes_AS_STRING(payload),
                                        PyBytes_GET_SIZE(payload), NULL, 0);
        if (placed == NULL && !PyErr_Occurred())
            placed = PyObject_CallMethodOneArg(index, str_placed, payload);
        if (placed == NULL)
            goto error;
        if (!PyList_CheckExact(placed)) {
            Py_DECREF(placed);
            PyErr_SetString(PyExc_TypeError, "AnchorIndex.placed: a list");
            goto error;
        }
        for (i = 0; i < PyList_GET_SIZE(placed); i++) {
            PyObject *sig = PyList_GET_ITEM(placed, i);
            truth = truth_of(PyObject_CallFunctionObjArgs(rh->rule_matches, sig, layer,
                                                          established, buffers, NULL));
            if (truth < 0 || (truth && PyList_Append(hits, sig) < 0)) {
                Py_DECREF(placed);
                goto error;
            }
        }
        Py_DECREF(placed);
    } else if (PyBytes_GET_SIZE(payload)) { /* an anchored rule has a content in the payload */
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(payload);
        Py_ssize_t n = PyBytes_GET_SIZE(payload);
        count = PyList_GET_SIZE(fast);
        for (i = 0; i < count; i++) {
            PyObject *entry = PyList_GET_ITEM(fast, i);
            PyObject *sig = PyTuple_GET_ITEM(entry, 0), *needle = PyTuple_GET_ITEM(entry, 1);
            Py_ssize_t low = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
            Py_ssize_t high = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
            const unsigned char *text = data;
            if (PyTuple_GET_ITEM(entry, 4) == Py_True) {
                if (folded == NULL && (folded = lowered(payload)) == NULL)
                    goto error;
                text = (const unsigned char *)PyBytes_AS_STRING(folded);
            }
            if (!found_in(text, n, needle, low, high))
                continue; /* its fast pattern is not where it must be */
            truth = truth_of(PyObject_CallFunctionObjArgs(rh->rule_matches, sig, layer,
                                                          established, buffers, NULL));
            if (truth < 0)
                goto error;
            if (truth && PyList_Append(hits, sig) < 0)
                goto error;
        }
    }
    if (PyBytes_GET_SIZE(payload) || PyDict_GET_SIZE(buffers) > 1) { /* a buffer to scan */
        count = PyList_GET_SIZE(prefilters);
        for (i = 0; i < count; i++) {
            PyObject *prefilter = PyList_GET_ITEM(prefilters, i);
            PyObject *name, *data, *candidates, *scanner;
            Py_INCREF(prefilter);
            name = PyObject_GetAttr(prefilter, str_buffer);
            if (name == NULL) {
                Py_DECREF(prefilter);
                goto error;
            }
            data = PyDict_GetItemWithError(buffers, name);
            Py_DECREF(name);
            if (data == NULL && PyErr_Occurred()) {
                Py_DECREF(prefilter);
                goto error;
            }
            Py_XINCREF(data);
            truth = data == NULL ? 0 : PyObject_IsTrue(data);
            if (truth < 0) {
                Py_DECREF(data);
                Py_DECREF(prefilter);
                goto error;
            }
            if (!truth) {
                /* (an empty buffer transformed may hold a pattern: dotprefix's ".") */
                PyObject *transforms;
                if (data == NULL) {
                    Py_DECREF(prefilter);
                    continue;
                }
                transforms = PyObject_GetAttr(prefilter, str_transforms);
                truth = transforms == NULL ? -1 : PyObject_IsTrue(transforms);
                Py_XDECREF(transforms);
                if (truth <= 0) {
                    Py_DECREF(data);
                    Py_DECREF(prefilter);
                    if (truth < 0)
                        goto error;
                    continue;
                }
            }
            scanner = prefilter_patterns(prefilter);
            if (scanner == NULL && PyErr_Occurred()) {
                Py_DECREF(data);
                Py_DECREF(prefilter);
                goto error;
            }
            if (scanner != NULL && PyBytes_CheckExact(data)) /* its candidates, called here */
                candidates = patterns_candidates((Patterns *)scanner, data);
            else
                candidates = PyObject_CallMethodOneArg(prefilter, str_candidates, data);
            Py_XDECREF(scanner);
            Py_DECREF(data);
            Py_DECREF(prefilter);
            if (candidates == NULL)
                goto error;
            truth = PyObject_IsTrue(candidates);
            if (truth > 0) {
                PyObject *seq = PySequence_Fast(candidates, "candidates: a sequence");
                Py_DECREF(candidates);
                if (seq == NULL)
                    goto error;
                for (j = 0; j < PySequence_Fast_GET_SIZE(seq); j++) {
                    PyObject *sig = PySequence_Fast_GET_ITEM(seq, j);
                    truth = truth_of(PyObject_CallFunctionObjArgs(
                        rh->rule_matches, sig, layer, established, buffers, NULL));
                    if (truth < 0 || (truth && PyList_Append(hits, sig) < 0)) {
                        Py_DECREF(seq);
                        goto error;
                    }
                }
                Py_DECREF(seq);
            } else {
                Py_DECREF(candidates);
                if (truth < 0)
                    goto error;
            }
        }
    }
    Py_DECREF(checks);
    Py_DECREF(plain);
    Py_DECREF(fast);
    Py_DECREF(index);
    Py_DECREF(prefilters);
    Py_XDECREF(numbers);
    Py_XDECREF(folded);
    return hits;
twin:
    Py_XDECREF(checks);
    Py_XDECREF(plain);
    Py_XDECREF(fast);
    Py_XDECREF(index);
    Py_XDECREF(prefilters);
    return PyObject_Vectorcall(rh->twin, args, (size_t)nargs, NULL);
error:
    Py_XDECREF(checks);
    Py_XDECREF(plain);
    Py_XDECREF(fast);
    Py_XDECREF(index);
    Py_XDECREF(prefilters);
    Py_XDECREF(hits);
    Py_XDECREF(numbers);
    Py_XDECREF(folded);
    return NULL;
}

static int RuleHits_init(RuleHits *rh, PyObject *args, PyObject *kwargs)
{
    PyObject *icmp, *head, *contents, *rule, *twin;
    static char *names[] = {"icmp_matches", "head_holds", "contents_match", "rule_matches",
                            "twin", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:RuleHits", names, &icmp, &head,
                                     &contents, &rule, &twin))
        return -1;
    keep(&rh->icmp_matches, icmp);
    keep(&rh->head_holds, head);
    keep(&rh->contents_match, contents);
    keep(&rh->rule_matches, rule);
    keep(&rh->twin, twin);
    return 0;
}

#define RULEHITS_OBJECTS(X) X(icmp_matches) X(head_holds) X(contents_match) X(rule_matches) X(twin)
GC_FUNCTIONS(RuleHits, RULEHITS_OBJECTS)

ONE_METHOD_CLASS(RuleHits, hits,
    "hits(layer, group, established, flags, payload, buffers) -> the rules that match, as "
    "the engine's _rule_hits",
    "The engine's rule driver over a group")

/* ---- DNS: appproto.parse_dns over UDP ------------------------------------------------- */

/* DnsParser(query_type, fallback, max_name).parse(payload, errors) is appproto.parse_dns
 * for a DNS message over UDP whose question's name has no compression pointer: the
 * DnsQuery it makes (its slots filled as DnsQuery.__init__ fills them). Any other message,
 * or one parse_dns would count an error for, goes to fallback (parse_dns itself). */

enum { Q_ID, Q_LABELS, Q_NAME, Q_QTYPE, Q_RESPONSE, Q_COUNT };

static const char *const query_names[Q_COUNT] = {"id", "labels", "name", "qtype", "response"};

typedef struct {
    PyObject_HEAD
    PyObject *query_type, *fallback;
    Py_ssize_t max_name;
    Py_ssize_t offsets[Q_COUNT];
} DnsParser;

static inline int put_query(DnsParser *dp, PyObject *query, int which, PyObject *value)
{
    return steal(place_of(query, dp->offsets[which]), value);
}

static PyObject *DnsParser_parse(DnsParser *dp, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *payload, *labels, *name, *query;
    const unsigned char *msg;
    Py_ssize_t size, pos = 12, total = 0, length = 0, count = 0, at;
    unsigned int ident, flags, qdcount;
    char *out;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(payload, errors)");
        return NULL;
    }
    payload = args[0];
    if (!PyBytes_CheckExact(payload))
        goto fallback;
    msg = (const unsigned char *)PyBytes_AS_STRING(payload);
    size = PyBytes_GET_SIZE(payload);
    if (size < 12)
        goto fallback;
    ident = u16(msg, 0);
    flags = u16(msg, 2);
    qdcount = u16(msg, 4);
    if (qdcount == 0 || flags & 0x7800)
        goto fallback;
    for (;;) { /* the name's labels: counted first */
        unsigned int n;
        if (pos >= size)
            goto fallback;
        n = msg[pos];
        if (n == 0) {
            pos += 1;
            break;
        }
        if (n & 0xC0 || pos + 1 + (Py_ssize_t)n > size)
            goto fallback; /* a pointer, a bad label, or truncated */
        total += n + 1;
        if (total > dp->max_name)
            goto fallback;
        length += n;
        count += 1;
        pos += 1 + n;
    }
    if (pos + 4 > size)
        goto fallback;
    labels = PyList_New(count);
    if (labels == NULL)
        return NULL;
    name = PyBytes_FromStringAndSize(NULL, length + (count > 0 ? count - 1 : 0));
    if (name == NULL) {
        Py_DECREF(labels);
        return NULL;
    }
    out = PyBytes_AS_STRING(name);
    for (at = 12, count = 0; msg[at] != 0; count++) {
        unsigned int n = msg[at];
        PyObject *label = PyBytes_FromStringAndSize((const char *)msg + at + 1, n);
        if (label == NULL) {
            Py_DECREF(labels);
            Py_DECREF(name);
            return NULL;
        }
        PyList_SET_ITEM(labels, count, label);
        if (count > 0)
            *out++ = '.';
        memcpy(out, msg + at + 1, n);
        out += n;
        at += 1 + n;
    }
    query = ((PyTypeObject *)dp->query_type)->tp_alloc((PyTypeObject *)dp->query_type, 0);
    if (query == NULL) {
        Py_DECREF(labels);
        Py_DECREF(name);
        return NULL;
    }
    /* name and labels first: the query owns them before anything can fail */
    if (put_query(dp, query, Q_NAME, name) < 0 || put_query(dp, query, Q_LABELS, labels) < 0
        || put_query(dp, query, Q_ID, PyLong_FromLong(ident)) < 0
        || put_query(dp, query, Q_QTYPE, PyLong_FromLong(u16(msg, pos))) < 0
        || put_query(dp, query, Q_RESPONSE, Py_NewRef(flags & 0x8000 ? Py_True : Py_False))
               < 0) {
        Py_DECREF(query);
        return NULL;
    }
    return query;
fallback:
    return PyObject_Vectorcall(dp->fallback, args, (size_t)nargs, NULL);
}

static int DnsParser_init(DnsParser *dp, PyObject *args, PyObject *kwargs)
{
    PyObject *query_type, *fallback;
    Py_ssize_t max_name;
    static char *names[] = {"query_type", "fallback", "max_name", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!On:DnsParser", names, &PyType_Type,
                                     &query_type, &fallback, &max_name))
        return -1;
    if (slot_offsets(query_type, "query_type", query_names, Q_COUNT, dp->offsets) < 0)
        return -1;
    keep(&dp->query_type, query_type);
    keep(&dp->fallback, fallback);
    dp->max_name = max_name;
    return 0;
}

#define DNSPARSER_OBJECTS(X) X(query_type) X(fallback)
GC_FUNCTIONS(DnsParser, DNSPARSER_OBJECTS)

ONE_METHOD_CLASS(DnsParser, parse,
    "parse(payload, errors) -> DnsQuery or None, as appproto.parse_dns over UDP",
    "parse_dns for the common DNS message over UDP")

/* ---- TLS: appproto.parse_tls_sni ---------------------------------------------------- */

/* SniParser(fallback).parse(payload, errors) is appproto.parse_tls_sni: the server name of
 * a ClientHello (bytes), or None where parse_tls_sni finds none without counting an error.
 * Anything parse_tls_sni would count an error for goes to fallback (parse_tls_sni). */

typedef struct {
    PyObject_HEAD
    PyObject *fallback;
} SniParser;

static PyObject *SniParser_parse(SniParser *sp, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *payload;
    const unsigned char *data;
    Py_ssize_t n, end, hs_end, pos, ext_end;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(payload, errors)");
        return NULL;
    }
    payload = args[0];
    if (!PyBytes_CheckExact(payload))
        goto fallback;
    data = (const unsigned char *)PyBytes_AS_STRING(payload);
    n = PyBytes_GET_SIZE(payload);
    if (n < 9 || data[0] != 0x16 || data[1] != 0x03 || data[5] != 1)
        goto fallback; /* counted */
    end = 5 + u16(data, 3);
    if (end > n)
        end = n; /* the hello continues in the next segment: parse what is here */
    hs_end = 9 + ((Py_ssize_t)data[6] << 16 | u16(data, 7));
    if (hs_end < end)
        end = hs_end;
    pos = 9 + 2 + 32; /* version, random */
    if (pos + 1 > end)
        goto fallback;
    pos += 1 + data[pos]; /* session id */
    if (pos + 2 > end)
        goto fallback;
    pos += 2 + u16(data, pos); /* cipher suites */
    if (pos + 1 > end)
        goto fallback;
    pos += 1 + data[pos]; /* compression methods */
    if (pos + 2 > end)
        Py_RETURN_NONE; /* no extensions at all: a legal, old hello without SNI */
    ext_end = pos + 2 + u16(data, pos);
    pos += 2;
    if (ext_end > end)
        ext_end = end;
    while (pos + 4 <= ext_end) {
        Py_ssize_t etype = u16(data, pos), elen = u16(data, pos + 2), list_end, at;
        pos += 4;
        if (pos + elen > ext_end)
            goto fallback;
        if (etype != 0) {
            pos += elen;
            continue;
        }
        /* server_name: its list of (type, length, name) */
        if (elen < 2)
            goto fallback;
        list_end = 2 + u16(data, pos);
        if (list_end > elen)
            list_end = elen;
        at = 2;
        while (at + 3 <= list_end) {
            Py_ssize_t kind = data[pos + at], size = u16(data, pos + at + 1);
            at += 3;
            if (at + size > list_end)
                goto fallback;
            if (kind == 0)
                return PyBytes_FromStringAndSize((const char *)data + pos + at, size);
            at += size;
        }
        Py_RETURN_NONE;
    }
    Py_RETURN_NONE;
fallback:
    return PyObject_Vectorcall(sp->fallback, args, (size_t)nargs, NULL);
}

static int SniParser_init(SniParser *sp, PyObject *args, PyObject *kwargs)
{
    PyObject *fallback;
    static char *names[] = {"fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:SniParser", names, &fallback))
        return -1;
    keep(&sp->fallback, fallback);
    return 0;
}

#define SNIPARSER_OBJECTS(X) X(fallback)
GC_FUNCTIONS(SniParser, SNIPARSER_OBJECTS)

ONE_METHOD_CLASS(SniParser, parse,
    "parse(payload, errors) -> the server name or None, as appproto.parse_tls_sni",
    "parse_tls_sni for a ClientHello")

/* ---- TLS: tlsinfo.hello_fields ------------------------------------------------------- */

/* hello_fields(body, client, ja3, version) is tlsinfo.hello_fields: when ja3 is true, the
 * JA3 (client) or JA3S (server) string of a hello's body (after its 4-byte handshake
 * header), as ASCII bytes, or None where ja3_client / ja3_server give None; when version
 * is true, the version hello_version gives. None for what is not asked. Every input is
 * read within its bounds, as the twin reads it: a list cut short by the body's end is read
 * as far as it goes. */

static int is_grease(unsigned int value)
{
    return (value & 0x0F0F) == 0x0A0A && value >> 8 == (value & 0xFF);
}

/* The JA3 text being written: at most 6 characters a 2-byte value ("65535-"), 4 a 1-byte
 * one, so 14 a body byte bounds it (see hello_fields). */
typedef struct {
    char *text;
    Py_ssize_t size;
} Ja3Text;

static void ja3_number(Ja3Text *out, unsigned int value)
{
    char digits[8];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        out->text[out->size++] = digits[--n];
}

/* The u16 values of data[from:to] (an odd last byte left out), GREASE left out, joined by
 * '-', after a ','. */
static void ja3_u16_list(Ja3Text *out, const unsigned char *data, Py_ssize_t from, Py_ssize_t to)
{
    int first = 1;
    out->text[out->size++] = ',';
    for (; from + 2 <= to; from += 2) {
        unsigned int value = u16(data, from);
        if (is_grease(value))
            continue;
        if (!first)
            out->text[out->size++] = '-';
        first = 0;
        ja3_number(out, value);
    }
}

/* Where a hello's extensions' list lies, when one starts at pos, as tlsinfo._extensions
 * finds it: each extension is then (type, size, data), its data cut at the body's end. */
typedef struct {
    Py_ssize_t start, end; /* the next extension, the end of the extensions' list */
} ExtWalk;

static int ext_walk(const unsigned char *body, Py_ssize_t n, Py_ssize_t pos, ExtWalk *walk)
{
    if (pos + 2 > n)
        return 0;
    walk->end = pos + 2 + (Py_ssize_t)u16(body, pos);
    if (walk->end > n)
        walk->end = n;
    walk->start = pos + 2;
    return 1;
}

/* The extension at walk->start, if a whole header of one is left: its type and its data
 * (body[*data:*data_end], cut at the body's end); walk->start moves past it. */
static int ext_next(const unsigned char *body, Py_ssize_t n, ExtWalk *walk, unsigned int *etype,
                    Py_ssize_t *data, Py_ssize_t *data_end)
{
    Py_ssize_t at = walk->start, size;
    if (at + 4 > walk->end)
        return 0;
    *etype = u16(body, at);
    size = u16(body, at + 2);
    *data = at + 4;
    *data_end = *data + size > n ? n : *data + size;
    walk->start = *data + size;
    return 1;
}

static PyObject *hello_ja3(const unsigned char *body, Py_ssize_t n, int client)
{
    Ja3Text out;
    Py_ssize_t pos, ciphers_at = 0, ciphers_end = 0, groups_at = 0, groups_end = 0;
    Py_ssize_t formats_at = 0, formats_end = 0;
    unsigned int version, cipher = 0;
    ExtWalk walk;
    PyObject *result;
    int first = 1;

    if (n < 2)
        return Py_NewRef(Py_None);
    version = u16(body, 0);
    pos = 34;
    if (pos >= n)
        return Py_NewRef(Py_None);
    pos += 1 + body[pos]; /* session id */
    if (pos + 2 > n)
        return Py_NewRef(Py_None);
    if (client) {
        Py_ssize_t size = u16(body, pos);
        ciphers_at = pos + 2;
        ciphers_end = ciphers_at + size > n ? n : ciphers_at + size;
        pos += 2 + size;
        if (pos >= n)
            return Py_NewRef(Py_None);
        pos += 1 + body[pos]; /* compression methods */
    }
    else {
        cipher = u16(body, pos);
        pos += 3; /* cipher suite, compression method */
    }
    out.text = PyMem_Malloc((size_t)n * 14 + 64);
    if (out.text == NULL)
        return PyErr_NoMemory();
    out.size = 0;
    ja3_number(&out, version);
    if (client)
        ja3_u16_list(&out, body, ciphers_at, ciphers_end);
    else {
        out.text[out.size++] = ',';
        ja3_number(&out, cipher);
    }
    out.text[out.size++] = ',';
    if (ext_walk(body, n, pos, &walk)) {
        unsigned int etype;
        Py_ssize_t data, data_end;
        while (ext_next(body, n, &walk, &etype, &data, &data_end)) {
            if (!is_grease(etype)) {
                if (!first)
                    out.text[out.size++] = '-';
                first = 0;
                ja3_number(&out, etype);
            }
            if (client && etype == 10 && data_end - data >= 2) { /* supported_groups */
                groups_at = data + 2;
                groups_end = groups_at + (Py_ssize_t)u16(body, data);
                if (groups_end > data_end)
                    groups_end = data_end;
            }
            else if (client && etype == 11 && data_end > data) { /* ec_point_formats */
                formats_at = data + 1;
                formats_end = formats_at + body[data];
                if (formats_end > data_end)
                    formats_end = data_end;
            }
        }
    }
    if (client) {
        Py_ssize_t i;
        ja3_u16_list(&out, body, groups_at, groups_end);
        out.text[out.size++] = ',';
        for (i = formats_at; i < formats_end; i++) {
            if (i > formats_at)
                out.text[out.size++] = '-';
            ja3_number(&out, body[i]);
        }
    }
    result = PyBytes_FromStringAndSize(out.text, out.size);
    PyMem_Free(out.text);
    return result;
}

/* tlsinfo.hello_version */
static PyObject *hello_version(const unsigned char *body, Py_ssize_t n, int client)
{
    unsigned int version;
    Py_ssize_t pos;
    ExtWalk walk;

    if (n < 2)
        return Py_NewRef(Py_None);
    version = u16(body, 0);
    pos = 34;
    if (pos >= n)
        return PyLong_FromUnsignedLong(version);
    pos += 1 + body[pos]; /* session id */
    if (client) {
        if (pos + 2 > n)
            return PyLong_FromUnsignedLong(version);
        pos += 2 + (Py_ssize_t)u16(body, pos); /* cipher suites */
        if (pos >= n)
            return PyLong_FromUnsignedLong(version);
        pos += 1 + body[pos]; /* compression methods */
    }
    else
        pos += 3; /* cipher suite, compression method */
    if (ext_walk(body, n, pos, &walk)) {
        unsigned int etype;
        Py_ssize_t data, data_end;
        while (ext_next(body, n, &walk, &etype, &data, &data_end)) {
            if (etype != 43) /* supported_versions */
                continue;
            if (!client)
                return PyLong_FromUnsignedLong(data_end - data >= 2 ? u16(body, data)
                                                                    : version);
            if (data_end > data) {
                Py_ssize_t from = data + 1, to = data + 1 + body[data];
                if (to > data_end)
                    to = data_end;
                for (; from + 2 <= to; from += 2) {
                    unsigned int offered = u16(body, from);
                    if (offered == 0x0304 || offered >> 8 == 0x7F)
                        return PyLong_FromUnsignedLong(0x0304);
                }
            }
        }
    }
    return PyLong_FromUnsignedLong(version);
}

static PyObject *hello_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *body;
    Py_ssize_t n;
    int client, with_ja3, with_version;
    PyObject *ja3, *version, *pair;

    (void)module;
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hello_fields(body: bytes, client, ja3, version)");
        return NULL;
    }
    body = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    n = PyBytes_GET_SIZE(args[0]);
    if ((client = PyObject_IsTrue(args[1])) < 0 || (with_ja3 = PyObject_IsTrue(args[2])) < 0
        || (with_version = PyObject_IsTrue(args[3])) < 0)
        return NULL;
    ja3 = with_ja3 ? hello_ja3(body, n, client) : Py_NewRef(Py_None);
    if (ja3 == NULL)
        return NULL;
    version = with_version ? hello_version(body, n, client) : Py_NewRef(Py_None);
    if (version == NULL) {
        Py_DECREF(ja3);
        return NULL;
    }
    pair = PyTuple_Pack(2, ja3, version);
    Py_DECREF(ja3);
    Py_DECREF(version);
    return pair;
}


/* The counters' compiled forms, called as their methods are (the object first): for the
 * tests, which hold them to the methods. */
static PyObject *threshold_allow(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double ts;
    int allowed;
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "threshold_allow(state, sid, threshold, src, dst, ts)");
        return NULL;
    }
    ts = PyFloat_AsDouble(args[5]);
    if (ts == -1.0 && PyErr_Occurred())
        return NULL;
    allowed = threshold_allows(args[0], args[1], args[2], args[3], args[4], args[5], ts);
    return allowed < 0 ? NULL : PyBool_FromLong(allowed);
}

static PyObject *port_scan_syn_function(PyObject *module, PyObject *const *args,
                                        Py_ssize_t nargs)
{
    double ts;
    long dport;
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "port_scan_syn(detector, ts, src, dport)");
        return NULL;
    }
    ts = PyFloat_AsDouble(args[1]);
    dport = PyLong_AsLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (dport < 0 || dport > 65535) {
        PyErr_SetString(PyExc_ValueError, "port_scan_syn: a port");
        return NULL;
    }
    return port_scan_syn(args[0], args[1], ts, args[2], (unsigned int)dport);
}

static PyObject *syn_flood_syn_function(PyObject *module, PyObject *const *args,
                                        Py_ssize_t nargs)
{
    double ts;
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "syn_flood_syn(detector, ts, src, dst)");
        return NULL;
    }
    ts = PyFloat_AsDouble(args[1]);
    if (ts == -1.0 && PyErr_Occurred())
        return NULL;
    return syn_flood_syn(args[0], args[1], ts, args[2], args[3]);
}

/* AnchorIndex.placed and stream.head_clear in C, called as the twin's are: for the tests,
 * which hold them to the twin's. None where the twin's is to answer. */
static PyObject *anchor_placed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *placed;
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[1]) || (args[2] != Py_None && !PySet_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "anchor_placed(index, text: bytes, skip: set | None)");
        return NULL;
    }
    placed = index_placed(args[0], (const unsigned char *)PyBytes_AS_STRING(args[1]),
                          PyBytes_GET_SIZE(args[1]), args[2] == Py_None ? NULL : args[2], 0);
    if (placed == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return placed;
}

static PyObject *anchor_head_clear(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *held;
    int clear;
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "head_clear(group, stream, payload: bytes)");
        return NULL;
    }
    held = PyObject_GetAttr(args[1], str_data);
    if (held == NULL)
        return NULL;
    if (!PyByteArray_CheckExact(held) || !PyByteArray_GET_SIZE(held)) {
        Py_DECREF(held);
        Py_RETURN_NONE; /* (the scan path asks only of a stream that holds bytes) */
    }
    clear = stream_head_clear(args[0], args[1], held,
                              (const unsigned char *)PyBytes_AS_STRING(args[2]),
                              PyBytes_GET_SIZE(args[2]));
    Py_DECREF(held);
    if (clear == -2)
        Py_RETURN_NONE;
    return clear < 0 ? NULL : PyBool_FromLong(clear);
}

static PyMethodDef module_functions[] = {
    {"anchor_placed", (PyCFunction)(void (*)(void))anchor_placed, METH_FASTCALL,
     "anchor_placed(index, text, skip) -> list or None (the index not of the shape, or its "
     "scanner not made yet): AnchorIndex.placed(text, skip or set())"},
    {"head_clear", (PyCFunction)(void (*)(void))anchor_head_clear, METH_FASTCALL,
     "head_clear(group, stream, payload) -> bool or None (not of the shape): "
     "stream.head_clear, for a stream that holds bytes"},
    {"hello_fields", (PyCFunction)(void (*)(void))hello_fields, METH_FASTCALL,
     "hello_fields(body, client, ja3, version) -> (the JA3 or JA3S string or None, the "
     "version or None), as tlsinfo.hello_fields"},
    {"threshold_allow", (PyCFunction)(void (*)(void))threshold_allow, METH_FASTCALL,
     "threshold_allow(state, sid, threshold, src, dst, ts) -> bool: ThresholdState.allow"},
    {"port_scan_syn", (PyCFunction)(void (*)(void))port_scan_syn_function, METH_FASTCALL,
     "port_scan_syn(detector, ts, src, dport) -> Detection or None: PortScan.syn"},
    {"syn_flood_syn", (PyCFunction)(void (*)(void))syn_flood_syn_function, METH_FASTCALL,
     "syn_flood_syn(detector, ts, src, dst) -> Detection or None: SynFlood.syn"},
    {"tls_walk", (PyCFunction)(void (*)(void))tls_walk, METH_FASTCALL,
     "tls_walk(shape, followed, flow, to_server, data, ip, start, end) -> True, False, or "
     "None (a state not of the shape): TlsRecords.walk over the flows followed"},
    {NULL, NULL, 0, NULL},
};

/* ---- HTTP: appproto.parse_http_request ------------------------------------------------ */

/* HttpParser(request_type, normalize_host, methods, max_headers, fallback).parse(payload,
 * errors) is appproto.parse_http_request: the request line split, the HttpRequest made by
 * its class (which normalises the URI), its headers (name and value stripped) read in C,
 * Host (through normalize_host) and User-Agent. A request line parse_http_request would
 * refuse (and count) goes to fallback (parse_http_request itself). */

typedef struct {
    PyObject_HEAD
    PyObject *request_type, *normalize_host, *methods, *fallback;
    Py_ssize_t max_headers;
} HttpParser;

static PyObject *str_headers, *str_host, *str_user_agent, *str_raw_body, *str_header_text;

static inline int http_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* data[*lo:*hi] stripped of ASCII white space (bytes.strip()). */
static inline void strip(const unsigned char *data, Py_ssize_t *lo, Py_ssize_t *hi)
{
    while (*lo < *hi && http_space(data[*lo]))
        (*lo)++;
    while (*hi > *lo && http_space(data[*hi - 1]))
        (*hi)--;
}

/* Whether data[lo:hi] is word in ASCII lower case (bytes.lower() == word). */
static inline int lower_is(const unsigned char *data, Py_ssize_t lo, Py_ssize_t hi,
                           const char *word)
{
    Py_ssize_t i, n = (Py_ssize_t)strlen(word);
    if (hi - lo != n)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = data[lo + i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)word[i])
            return 0;
    }
    return 1;
}

/* Where the next CRLF starts in data[from:end], or end. */
static inline Py_ssize_t line_end(const unsigned char *data, Py_ssize_t from, Py_ssize_t end)
{
    const unsigned char *found;
    if (end - from < 2)
        return end;
    found = memmem(data + from, (size_t)(end - from), "\r\n", 2);
    return found == NULL ? end : found - data;
}

static PyObject *HttpParser_parse(HttpParser *hp, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *payload, *method = NULL, *uri = NULL, *request = NULL, *headers = NULL;
    PyObject *host = NULL, *agent = NULL, *body;
    const unsigned char *data, *found;
    Py_ssize_t n, head, first, space1, space2, at, lines;
    int known, as_sent = 1; /* every header line is "Name: value" as http.header writes it */

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(payload, errors)");
        return NULL;
    }
    payload = args[0];
    if (!PyBytes_CheckExact(payload))
        goto fallback;
    data = (const unsigned char *)PyBytes_AS_STRING(payload);
    n = PyBytes_GET_SIZE(payload);
    found = n >= 4 ? memmem(data, (size_t)n, "\r\n\r\n", 4) : NULL;
    head = found == NULL ? n : found - data;
    first = line_end(data, 0, head);
    /* the request line: exactly three parts separated by single spaces */
    found = memchr(data, ' ', (size_t)first);
    if (found == NULL)
        goto fallback;
    space1 = found - data;
    found = memchr(data + space1 + 1, ' ', (size_t)(first - space1 - 1));
    if (found == NULL)
        goto fallback;
    space2 = found - data;
    if (memchr(data + space2 + 1, ' ', (size_t)(first - space2 - 1)) != NULL
        || first - space2 - 1 < 5 || memcmp(data + space2 + 1, "HTTP/", 5) != 0)
        goto fallback;
    method = PyBytes_FromStringAndSize((const char *)data, space1);
    if (method == NULL)
        return NULL;
    known = PySequence_Contains(hp->methods, method);
    if (known <= 0) {
        Py_DECREF(method);
        if (known < 0)
            return NULL;
        goto fallback;
    }
    uri = PyBytes_FromStringAndSize((const char *)data + space1 + 1, space2 - space1 - 1);
    if (uri == NULL)
        goto error;
    request = PyObject_CallFunctionObjArgs(hp->request_type, method, uri, NULL);
    if (request == NULL)
        goto error;
    headers = PyList_New(0);
    if (headers == NULL)
        goto error;
    /* the lines after the first, at most max_headers of them */
    for (at = first, lines = 0; at < head && lines < hp->max_headers; lines++) {
        Py_ssize_t start = at + 2, stop, colon, name_lo, name_hi, value_lo, value_hi;
        PyObject *pair;
        if (start > head)
            break;
        stop = line_end(data, start, head);
        at = stop;
        found = memchr(data + start, ':', (size_t)(stop - start));
        if (found == NULL) {
            as_sent = 0; /* a line http.header leaves out */
            continue;
        }
        colon = found - data;
        name_lo = start;
        name_hi = colon;
        value_lo = colon + 1;
        value_hi = stop;
        strip(data, &name_lo, &name_hi);
        strip(data, &value_lo, &value_hi);
        if (name_lo != start || name_hi != colon || stop - colon < 2 || data[colon + 1] != ' '
            || (value_lo == value_hi ? stop != colon + 2
                                     : value_lo != colon + 2 || value_hi != stop))
            as_sent = 0;
        pair = Py_BuildValue("(y#y#)", data + name_lo, name_hi - name_lo, data + value_lo,
                             value_hi - value_lo);
        if (pair == NULL || PyList_Append(headers, pair) < 0) {
            Py_XDECREF(pair);
            goto error;
        }
        if (host == NULL && lower_is(data, name_lo, name_hi, "host")) {
            host = PyObject_CallOneArg(hp->normalize_host, PyTuple_GET_ITEM(pair, 1));
            if (host == NULL) {
                Py_DECREF(pair);
                goto error;
            }
        } else if (agent == NULL && lower_is(data, name_lo, name_hi, "user-agent")) {
            agent = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        }
        Py_DECREF(pair);
    }
    if (PyObject_SetAttr(request, str_headers, headers) < 0
        || (host != NULL && PyObject_SetAttr(request, str_host, host) < 0)
        || (agent != NULL && PyObject_SetAttr(request, str_user_agent, agent) < 0))
        goto error;
    /* http.header, where it is the header lines as sent: each "Name: value" (the name and
     * the value as stripped, one space between), all of them read, the last one ended by
     * the blank line (or no header line at all) */
    if (as_sent && at >= head && (head + 4 <= n || first >= head)) {
        PyObject *text = first >= head ? PyBytes_FromStringAndSize("", 0)
                                       : PyBytes_FromStringAndSize((const char *)data + first + 2,
                                                                   head - first);
        if (text == NULL || PyObject_SetAttr(request, str_header_text, text) < 0) {
            Py_XDECREF(text);
            goto error;
        }
        Py_DECREF(text);
    }
    if (head < n) {
        body = PyBytes_FromStringAndSize((const char *)data + head + 4, n - head - 4);
        if (body == NULL || PyObject_SetAttr(request, str_raw_body, body) < 0) {
            Py_XDECREF(body);
            goto error;
        }
        Py_DECREF(body);
    }
    Py_DECREF(method);
    Py_DECREF(uri);
    Py_DECREF(headers);
    Py_XDECREF(host);
    Py_XDECREF(agent);
    return request;
error:
    Py_XDECREF(method);
    Py_XDECREF(uri);
    Py_XDECREF(request);
    Py_XDECREF(headers);
    Py_XDECREF(host);
    Py_XDECREF(agent);
    return NULL;
fallback:
    return PyObject_Vectorcall(hp->fallback, args, (size_t)nargs, NULL);
}

static int HttpParser_init(HttpParser *hp, PyObject *args, PyObject *kwargs)
{
    PyObject *request_type, *normalize_host, *methods, *fallback;
    Py_ssize_t max_headers;
    static char *names[] = {"request_type", "normalize_host", "methods", "max_headers",
                            "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnO:HttpParser", names, &request_type,
                                     &normalize_host, &methods, &max_headers, &fallback))
        return -1;
    keep(&hp->request_type, request_type);
    keep(&hp->normalize_host, normalize_host);
    keep(&hp->methods, methods);
    keep(&hp->fallback, fallback);
    hp->max_headers = max_headers;
    return 0;
}

#define HTTPPARSER_OBJECTS(X) X(request_type) X(normalize_host) X(methods) X(fallback)
GC_FUNCTIONS(HttpParser, HTTPPARSER_OBJECTS)

ONE_METHOD_CLASS(HttpParser, parse,
    "parse(payload, errors) -> HttpRequest or None, as appproto.parse_http_request",
    "parse_http_request for an HTTP/1 request")

/* ---- the common frame's decoding ------------------------------------------------------ */

/* Decoder(layer_type, fallback[, gtp_type]).decode(data, linktype, errors) is
 * decode.decode_packet for the frames most traffic is made of: Ethernet / IPv4, not a
 * fragment, carrying TCP, or UDP that is not VXLAN; with gtp_type (decode.GtpInfo), also a
 * GTP-U G-PDU with a plain header (no optional fields) carrying such an IPv4 packet (not
 * GTP-U again). It fills the Layers' and the GtpInfo's slots as decode_ipv4 and decode_gtp
 * do; any other frame (or anything they would count as an error) goes to fallback,
 * decode_packet itself, which decodes and counts as always. */

enum {
    L_DEPTH,
    L_DPORT,
    L_DST,
    L_FAMILY,
    L_FLAGS,
    L_FRAG,
    L_FRAGMENT,
    L_GTP,
    L_ICMP_CODE,
    L_ICMP_TYPE,
    L_IP_AT,
    L_PAYLOAD,
    L_PROTO,
    L_RAW,
    L_SEQ,
    L_SPORT,
    L_SRC,
    L_TRUNCATED,
    L_TUNNEL,
    L_COUNT
};

static const char *layer_names[L_COUNT] = {
    "depth", "dport", "dst",     "family",  "flags",   "frag",      "fragment",
    "gtp",   "icmp_code", "icmp_type", "ip_at", "payload", "proto", "raw",
    "seq",   "sport", "src",     "truncated", "tunnel",
};

enum { G_ERROR, G_INNER, G_MSG_TYPE, G_NESTED, G_TEID, G_COUNT };

static const char *gtp_names[G_COUNT] = {"error", "inner", "msg_type", "nested", "teid"};

typedef struct {
    PyObject_HEAD
    PyObject *layer_type;
    PyObject *fallback;
    PyObject *gtp_type; /* decode.GtpInfo: G-PDUs decoded here too; NULL: handed over */
    Py_ssize_t offsets[L_COUNT];
    Py_ssize_t gtp_offsets[G_COUNT];
} Decoder;

static PyObject *minus_one, *four;

/* Steals value (NULL: an error already set, -1). */
static inline int put(Decoder *dec, PyObject *layer, int which, PyObject *value)
{
    return steal(place_of(layer, dec->offsets[which]), value);
}

/* Steals value, into a GtpInfo's slot. */
static inline int put_gtp(Decoder *dec, PyObject *info, int which, PyObject *value)
{
    return steal(place_of(info, dec->gtp_offsets[which]), value);
}

static inline PyObject *ref(PyObject *value)
{
    Py_INCREF(value);
    return value;
}

/* An IPv4 packet at data[off:end] as decode_ipv4 decodes it without counting anything: not
 * a fragment, carrying TCP or UDP that is not VXLAN (and, unless gtp_ok, not GTP-U). 0, or
 * -1 where decode_packet is to decode the frame. */
typedef struct {
    Py_ssize_t off, end;   /* where the IP header starts; where the transport's payload ends */
    Py_ssize_t payload;    /* where the transport's payload starts */
    unsigned int proto, sport, dport, flags;
    unsigned long seq;
} Ip4;

static int parse_ipv4(const unsigned char *data, Py_ssize_t off, Py_ssize_t end, int gtp_ok,
                      Ip4 *ip)
{
    Py_ssize_t hlen, total, at, thlen, ulen;
    if (end - off < 20 || data[off] >> 4 != 4)
        return -1;
    hlen = (data[off] & 0x0F) << 2;
    total = u16(data, off + 2);
    if (hlen < 20 || total < hlen || off + total > end)
        return -1; /* errors, or a short snaplen (counted) */
    end = off + total;
    if (u16(data, off + 6) & 0x3FFF)
        return -1; /* a fragment */
    ip->off = off;
    ip->proto = data[off + 9];
    at = off + hlen;
    if (ip->proto == 6) {
        if (end - at < 20)
            return -1;
        thlen = (data[at + 12] >> 4) << 2;
        if (thlen < 20 || at + thlen > end)
            return -1;
        ip->sport = u16(data, at);
        ip->dport = u16(data, at + 2);
        ip->seq = u32(data, at + 4);
        ip->flags = data[at + 13];
        ip->payload = at + thlen;
        ip->end = end;
        return 0;
    }
    if (ip->proto != 17 || end - at < 8)
        return -1;
    ip->sport = u16(data, at);
    ip->dport = u16(data, at + 2);
    if (ip->dport == 4789 && end - at >= 16)
        return -1; /* VXLAN */
    if (ip->dport == 2152 && !gtp_ok)
        return -1; /* GTP-U */
    ulen = u16(data, at + 4);
    if (ulen < 8)
        return -1; /* counted */
    if (ulen <= end - at)
        end = at + ulen;
    ip->flags = 0;
    ip->seq = 0;
    ip->payload = at + 8;
    ip->end = end;
    return 0;
}

/* The Layer of a decoded IPv4 packet (a new reference), its gtp and tunnel slots None. */
static PyObject *ipv4_layer(Decoder *dec, PyObject *bytes, const Ip4 *ip, PyObject *depth)
{
    const char *data = PyBytes_AS_STRING(bytes);
    PyObject *layer;
    layer = ((PyTypeObject *)dec->layer_type)->tp_alloc((PyTypeObject *)dec->layer_type, 0);
    if (layer == NULL)
        return NULL;
    if (put(dec, layer, L_FAMILY, ref(four)) < 0
        || put(dec, layer, L_SRC, PyBytes_FromStringAndSize(data + ip->off + 12, 4)) < 0
        || put(dec, layer, L_DST, PyBytes_FromStringAndSize(data + ip->off + 16, 4)) < 0
        || put(dec, layer, L_PROTO, PyLong_FromLong(ip->proto)) < 0
        || put(dec, layer, L_DEPTH, ref(depth)) < 0
        || put(dec, layer, L_SPORT, PyLong_FromLong(ip->sport)) < 0
        || put(dec, layer, L_DPORT, PyLong_FromLong(ip->dport)) < 0
        || put(dec, layer, L_FLAGS, PyLong_FromLong(ip->flags)) < 0
        || put(dec, layer, L_SEQ, PyLong_FromUnsignedLong(ip->seq)) < 0
        || put(dec, layer, L_TRUNCATED, ref(Py_False)) < 0
        || put(dec, layer, L_ICMP_TYPE, ref(minus_one)) < 0
        || put(dec, layer, L_ICMP_CODE, ref(minus_one)) < 0
        || put(dec, layer, L_FRAGMENT, ref(Py_False)) < 0
        || put(dec, layer, L_FRAG, ref(Py_None)) < 0
        || put(dec, layer, L_PAYLOAD,
               PyBytes_FromStringAndSize(data + ip->payload, ip->end - ip->payload)) < 0
        || put(dec, layer, L_GTP, ref(Py_None)) < 0 || put(dec, layer, L_TUNNEL, ref(Py_None)) < 0
        || put(dec, layer, L_RAW, ref(bytes)) < 0
        || put(dec, layer, L_IP_AT, PyLong_FromSsize_t(ip->off)) < 0) {
        Py_DECREF(layer);
        return NULL;
    }
    return layer;
}

/* A G-PDU's GtpInfo and inner Layer onto the outer layer, as decode_gtp sets them: a plain
 * GTPv1 header (no optional fields) carrying an IPv4 packet that parse_ipv4 decodes. 0, 1
 * (not such a frame: decode_packet decodes it) or -1 on error. */
static int gtp_pdu(Decoder *dec, PyObject *bytes, const Ip4 *outer_ip, PyObject *outer)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t at = outer_ip->payload, pdu_end;
    PyObject *info, *inner;
    unsigned long teid;
    Ip4 ip;
    if (outer_ip->end - at < 8 || data[at] != 0x30 || data[at + 1] != 255)
        return 1; /* short, another version, optional fields, or not a G-PDU */
    pdu_end = at + 8 + u16(data, at + 2);
    if (pdu_end > outer_ip->end || pdu_end <= at + 8)
        return 1; /* counted: truncated, or an empty PDU */
    if (parse_ipv4(data, at + 8, pdu_end, 0, &ip) < 0)
        return 1;
    teid = u32(data, at + 4);
    info = ((PyTypeObject *)dec->gtp_type)->tp_alloc((PyTypeObject *)dec->gtp_type, 0);
    if (info == NULL)
        return -1;
    inner = ipv4_layer(dec, bytes, &ip, one);
    if (inner == NULL) {
        Py_DECREF(info);
        return -1;
    }
    keep(place_of(inner, dec->offsets[L_TUNNEL]), outer);
    /* the inner layer first: the info owns it before anything can fail */
    if (put_gtp(dec, info, G_INNER, inner) < 0
        || put_gtp(dec, info, G_TEID, PyLong_FromUnsignedLong(teid)) < 0
        || put_gtp(dec, info, G_MSG_TYPE, PyLong_FromLong(255)) < 0
        || put_gtp(dec, info, G_ERROR, ref(Py_None)) < 0
        || put_gtp(dec, info, G_NESTED, ref(Py_False)) < 0) {
        Py_DECREF(info);
        return -1;
    }
    Py_XSETREF(*place_of(outer, dec->offsets[L_GTP]), info);
    return 0;
}

static PyObject *Decoder_decode(Decoder *dec, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *bytes, *layer;
    const unsigned char *data;
    Py_ssize_t n;
    long linktype;
    int gtp;
    Ip4 ip;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode(data, linktype, errors)");
        return NULL;
    }
    bytes = args[0];
    if (!PyBytes_CheckExact(bytes) || !PyLong_CheckExact(args[1]))
        goto fallback;
    linktype = PyLong_AsLong(args[1]);
    if (linktype == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (linktype != 1)
        goto fallback;
    data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    n = PyBytes_GET_SIZE(bytes);
    if (n < 34 || data[12] != 0x08 || data[13] != 0x00)
        goto fallback;
    if (parse_ipv4(data, 14, n, dec->gtp_type != NULL, &ip) < 0)
        goto fallback;
    gtp = ip.proto == 17 && ip.dport == 2152;
    layer = ipv4_layer(dec, bytes, &ip, zero);
    if (layer == NULL)
        return NULL;
    if (gtp) {
        int done = gtp_pdu(dec, bytes, &ip, layer);
        if (done != 0) {
            Py_DECREF(layer);
            if (done < 0)
                return NULL;
            goto fallback;
        }
    }
    return layer;
fallback:
    return PyObject_Vectorcall(dec->fallback, args, (size_t)nargs, NULL);
}

/* The offsets of a slots-only class's object slots (names); -1 with an error set. */
static int slot_offsets(PyObject *type, const char *what, const char *const *names, int count,
                        Py_ssize_t *out)
{
    int i;
    if (((PyTypeObject *)type)->tp_dictoffset != 0) {
        PyErr_Format(PyExc_TypeError, "%s: a class of slots only", what);
        return -1;
    }
    for (i = 0; i < count; i++) {
        PyObject *descr = PyObject_GetAttrString(type, names[i]);
        PyMemberDef *member;
        if (descr == NULL)
            return -1;
        if (Py_TYPE(descr) != &PyMemberDescr_Type) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", what, names[i]);
            return -1;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", what, names[i]);
            return -1;
        }
        out[i] = member->offset;
        Py_DECREF(descr);
    }
    return 0;
}

static int Decoder_init(Decoder *dec, PyObject *args, PyObject *kwargs)
{
    PyObject *layer_type, *fallback, *gtp_type = NULL;
    static char *names[] = {"layer_type", "fallback", "gtp_type", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O|O!:Decoder", names, &PyType_Type,
                                     &layer_type, &fallback, &PyType_Type, &gtp_type))
        return -1;
    if (slot_offsets(layer_type, "layer_type", layer_names, L_COUNT, dec->offsets) < 0)
        return -1;
    if (gtp_type != NULL
        && slot_offsets(gtp_type, "gtp_type", gtp_names, G_COUNT, dec->gtp_offsets) < 0)
        return -1;
    keep(&dec->layer_type, layer_type);
    keep(&dec->fallback, fallback);
    keep_x(&dec->gtp_type, gtp_type);
    return 0;
}

#define DECODER_OBJECTS(X) X(layer_type) X(fallback) X(gtp_type)
GC_FUNCTIONS(Decoder, DECODER_OBJECTS)

ONE_METHOD_CLASS(Decoder, decode,
    "decode(data, linktype, errors) -> Layer or None, as decode.decode_packet",
    "decode_packet for the common Ethernet / IPv4 frame")

/* ---- the type ------------------------------------------------------------------------ */

static int FastPath_init(FastPath *fp, PyObject *args, PyObject *kwargs)
{
    PyObject *index, *flows, *flow_type, *hit, *layer_type, *lookup;
    double idle;
    static char *names[] = {"index",        "flows",      "idle_timeout", "flow_type",
                            "anchored_hit", "layer_type", "lookup",       NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OdO!OO!O:FastPath", names, &PyDict_Type,
                                     &index, &flows, &idle, &PyType_Type, &flow_type, &hit,
                                     &PyType_Type, &layer_type, &lookup))
        return -1;
    if (slot_offsets(layer_type, "layer_type", lookup_names, 6, fp->layer_offsets) < 0
        || slot_offsets(flow_type, "flow_type", slot_names, S_COUNT, fp->offsets) < 0)
        return -1;
    keep(&fp->index, index);
    keep(&fp->flows, flows);
    keep(&fp->flow_type, flow_type);
    keep(&fp->anchored_hit, hit);
    keep(&fp->layer_type, layer_type);
    keep(&fp->lookup, lookup);
    fp->idle_timeout = idle;
    return 0;
}

static int FastPath_traverse(FastPath *fp, visitproc visit, void *arg)
{
    int i;
    Py_VISIT(fp->index);
    Py_VISIT(fp->flows);
    Py_VISIT(fp->flow_type);
    Py_VISIT(fp->anchored_hit);
    Py_VISIT(fp->layer_type);
    Py_VISIT(fp->lookup);
    Py_VISIT(fp->segment);
    Py_VISIT(fp->full);
    Py_VISIT(fp->outer);
    Py_VISIT(fp->reassembler);
    Py_VISIT(fp->stream_type);
    Py_VISIT(fp->head_clear);
    Py_VISIT(fp->tls_walk);
    Py_VISIT(fp->tls_taken);
    Py_VISIT(fp->tls_flows);
    Py_VISIT(fp->tls_shape_held);
    Py_VISIT(fp->http);
    Py_VISIT(fp->table);
    Py_VISIT(fp->stats);
    Py_VISIT(fp->hellos);
    Py_VISIT(fp->plans);
    Py_VISIT(fp->plan_of);
    Py_VISIT(fp->alerting);
    Py_VISIT(fp->scan);
    Py_VISIT(fp->flood);
    Py_VISIT(fp->fire);
    Py_VISIT(fp->detected);
    Py_VISIT(fp->counters);
    Py_VISIT(fp->no_alerts);
    Py_VISIT(fp->addr_bits);
    Py_VISIT(fp->port_bits);
    Py_VISIT(fp->made_plans);
    for (i = 0; i < GROUP_CACHE; i++) {
        Py_VISIT(fp->groups[i].group);
        Py_VISIT(fp->groups[i].packed);
        Py_VISIT(fp->groups[i].probe);
    }
    return 0;
}

static int FastPath_clear(FastPath *fp)
{
    int i;
    Py_CLEAR(fp->index);
    Py_CLEAR(fp->flows);
    Py_CLEAR(fp->flow_type);
    Py_CLEAR(fp->anchored_hit);
    Py_CLEAR(fp->layer_type);
    Py_CLEAR(fp->lookup);
    Py_CLEAR(fp->segment);
    Py_CLEAR(fp->full);
    Py_CLEAR(fp->outer);
    Py_CLEAR(fp->reassembler);
    Py_CLEAR(fp->stream_type);
    Py_CLEAR(fp->head_clear);
    Py_CLEAR(fp->tls_walk);
    Py_CLEAR(fp->tls_taken);
    Py_CLEAR(fp->tls_flows);
    Py_CLEAR(fp->tls_shape_held);
    Py_CLEAR(fp->http);
    Py_CLEAR(fp->table);
    Py_CLEAR(fp->stats);
    Py_CLEAR(fp->hellos);
    Py_CLEAR(fp->plans);
    Py_CLEAR(fp->plan_of);
    Py_CLEAR(fp->alerting);
    Py_CLEAR(fp->scan);
    Py_CLEAR(fp->flood);
    Py_CLEAR(fp->fire);
    Py_CLEAR(fp->detected);
    Py_CLEAR(fp->counters);
    Py_CLEAR(fp->no_alerts);
    Py_CLEAR(fp->addr_bits);
    Py_CLEAR(fp->port_bits);
    Py_CLEAR(fp->made_plans);
    for (i = 0; i < GROUP_CACHE; i++)
        group_forget(&fp->groups[i]);
    return 0;
}

static void FastPath_dealloc(FastPath *fp)
{
    PyObject_GC_UnTrack(fp);
    FastPath_clear(fp);
    PyMem_Free(fp->addr_starts);
    PyMem_Free(fp->port_starts);
    PyMem_Free(fp->pools);
    if (fp->keys != NULL) {
        int i;
        for (i = 0; i < KEY_CACHE; i++)
            Py_XDECREF(fp->keys[i]);
        PyMem_Free(fp->keys);
    }
    Py_TYPE(fp)->tp_free((PyObject *)fp);
}

static PyObject *FastPath_scan_path(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t depth = 0;
    RecordsShape shape;
    if ((nargs != 5 && nargs != 8 && nargs != 9 && nargs != 10) || !PyCallable_Check(args[0])
        || (args[1] != Py_None && !PyCallable_Check(args[1])) || !PyType_Check(args[3])
        || !PyCallable_Check(args[4])
        || (nargs >= 8 && args[5] != Py_None
            && (!PyCallable_Check(args[5]) || !PyCallable_Check(args[6])
                || !PyDict_Check(args[7])))) {
        PyErr_SetString(PyExc_TypeError, "scan_path(segment, outer, reassembler, stream_type, "
                                         "head_clear[, tls_walk, tls_taken, tls_flows[, "
                                         "tls_shape[, http]]])");
        return NULL;
    }
    if (nargs >= 9 && args[5] != Py_None && records_shape(args[8], &shape) < 0)
        return NULL;
    if (slot_offsets(args[3], "stream_type", stream_slot_names, SD_COUNT, fp->stream_offsets)
        < 0) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "stream_type: a stream direction's slots");
        }
        return NULL;
    }
    if (args[2] != Py_None) {
        depth = attr_ssize(args[2], str_depth);
        if (depth == -1 && PyErr_Occurred())
            return NULL;
        if (slot_offsets((PyObject *)Py_TYPE(args[2]), "reassembler", reassembler_slot_names,
                         RA_COUNT, fp->reassembler_offsets)
            < 0)
            return NULL;
    }
    keep(&fp->segment, args[0]);
    keep(&fp->outer, args[1]);
    keep(&fp->reassembler, args[2]);
    keep(&fp->stream_type, args[3]);
    keep(&fp->head_clear, args[4]);
    if (nargs >= 8 && args[5] != Py_None) {
        keep(&fp->tls_walk, args[5]);
        keep(&fp->tls_taken, args[6]);
        keep(&fp->tls_flows, args[7]);
        Py_CLEAR(fp->tls_shape_held);
        if (nargs >= 9) {
            fp->tls_shape = shape;
            keep(&fp->tls_shape_held, args[8]);
        }
    } else {
        Py_CLEAR(fp->tls_walk);
        Py_CLEAR(fp->tls_taken);
        Py_CLEAR(fp->tls_flows);
        Py_CLEAR(fp->tls_shape_held);
    }
    if (nargs == 10)
        keep(&fp->http, args[9]);
    else
        Py_CLEAR(fp->http);
    fp->depth = depth;
    Py_RETURN_NONE;
}


/* header_bits(src, dst, sport, dport, ports): Matcher._header_bits of an IPv4 packet (4-byte
 * addresses) from the segment tables new_flow_path() was handed: which address and port
 * expressions its addresses and ports fall in (ports false: -1 each, a protocol without
 * ports). */
static PyObject *FastPath_header_bits(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    long sport, dport;
    int ports;
    uint32_t src, dst;
    PyObject *out;
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])
        || PyBytes_GET_SIZE(args[0]) != 4 || PyBytes_GET_SIZE(args[1]) != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "header_bits(src, dst, sport, dport, ports): IPv4 addresses");
        return NULL;
    }
    if (fp->addr_bits == NULL || fp->port_bits == NULL) {
        PyErr_SetString(PyExc_ValueError, "header_bits: new_flow_path() has not been called");
        return NULL;
    }
    sport = PyLong_AsLong(args[2]);
    dport = PyLong_AsLong(args[3]);
    ports = PyObject_IsTrue(args[4]);
    if (PyErr_Occurred() || ports < 0)
        return NULL;
    src = u32((const unsigned char *)PyBytes_AS_STRING(args[0]), 0);
    dst = u32((const unsigned char *)PyBytes_AS_STRING(args[1]), 0);
    out = PyTuple_New(4);
    if (out == NULL)
        return NULL;
    PyTuple_SET_ITEM(out, 0, Py_NewRef(PyTuple_GET_ITEM(
                                 fp->addr_bits, segment_of(fp->addr_starts, fp->addr_count, src))));
    PyTuple_SET_ITEM(out, 1, Py_NewRef(PyTuple_GET_ITEM(
                                 fp->addr_bits, segment_of(fp->addr_starts, fp->addr_count, dst))));
    if (ports && sport >= 0 && sport <= 65535 && dport >= 0 && dport <= 65535) {
        PyTuple_SET_ITEM(out, 2, Py_NewRef(PyTuple_GET_ITEM(
                                     fp->port_bits, segment_of(fp->port_starts, fp->port_count,
                                                               (uint32_t)sport))));
        PyTuple_SET_ITEM(out, 3, Py_NewRef(PyTuple_GET_ITEM(
                                     fp->port_bits, segment_of(fp->port_starts, fp->port_count,
                                                               (uint32_t)dport))));
    } else if (ports) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, "header_bits: a port");
        return NULL;
    } else {
        PyObject *none = PyLong_FromLong(-1);
        if (none == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, 2, Py_NewRef(none));
        PyTuple_SET_ITEM(out, 3, none);
    }
    return out;
}

static PyMethodDef FastPath_methods[] = {
    {"process", (PyCFunction)(void (*)(void))FastPath_process, METH_FASTCALL,
     "process(ts, data, linktype) -> the frame's alerts: take() for Ethernet, the full path "
     "(full_path()) for a frame it leaves or of another link type (counted here)"},
    {"flush_stats", (PyCFunction)FastPath_flush_stats, METH_NOARGS,
     "flush_stats(): the packets counted here since the last call (Stats.packets, "
     "Stats.fast) added to the engine's Stats"},
    {"full_path", (PyCFunction)FastPath_full_path, METH_O,
     "full_path(full): the engine's full path, full(ts, data, linktype), for process()"},
    {"take", (PyCFunction)(void (*)(void))FastPath_take, METH_FASTCALL,
     "take(ts, data) -> True (accounted for), False (full path) or the flow key of an "
     "IPv4/TCP packet no flow holds (bytes); once new_flow_path() has the engine's tables: "
     "False, or the packet's alerts (no_alerts when accounted for), the packet counted"},
    {"new_flow_path", (PyCFunction)(void (*)(void))FastPath_new_flow_path,
     METH_VARARGS | METH_KEYWORDS,
     "new_flow_path(table, stats, hellos, plans, plan_of, addr, ports, alerting, scan, flood, "
     "fire, detected, no_alerts, on, made, sizes[, counters]): take a packet no flow holds as "
     "the engine's _unheld does, hatch an embryo as its _hatch does, make a new flow in "
     "lookup(); with counters, its thresholds and SYN detectors counted here"},
    {"header_bits", (PyCFunction)(void (*)(void))FastPath_header_bits, METH_FASTCALL,
     "header_bits(src, dst, sport, dport, ports) -> the address and port expressions an "
     "IPv4 packet's addresses and ports fall in, as Matcher._header_bits"},
    {"lookup", (PyCFunction)(void (*)(void))FastPath_lookup, METH_FASTCALL,
     "lookup(layer, ts) -> (flow, to_server), as FlowTable.lookup"},
    {"scan_path", (PyCFunction)(void (*)(void))FastPath_scan_path, METH_FASTCALL,
     "scan_path(segment, outer, reassembler, stream_type, head_clear[, tls_walk, tls_taken, "
     "tls_flows[, tls_shape]]): "
     "a data "
     "segment of an "
     "established flow whose direction's selection is (False, group, app, True) is taken as "
     "the engine's _scan_segment (segment) takes it, done here but for the scans of "
     "prefilters without a compiled scanner and the stream's growth past its bound; a G-PDU "
     "whose outer flow has prefilters, when its payload prefilters' scanners find nothing in "
     "its UDP payload or, a prefilter without one, outer(group, data, end) is true (its "
     "_scan_outer; None: never)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appliance.inspect._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The engine's fast path over its flow index",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastPath_init,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_traverse = (traverseproc)FastPath_traverse,
    .tp_clear = (inquiry)FastPath_clear,
    .tp_methods = FastPath_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "appliance.inspect._fastpath",
    .m_doc = "The inspection engine's fast path, compiled (see engine.py for its twin)",
    .m_size = -1,
    .m_methods = module_functions,
};

static int intern(PyObject **place, const char *text)
{
    *place = PyUnicode_InternFromString(text);
    return *place == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyTypeObject *const types[] = {&FastPathType,  &DecoderType,   &RuleHitsType,
                                   &DnsParserType, &SniParserType, &HttpParserType,
                                   &PatternsType};
    PyObject *mod;
    int i;
    for (i = 0; i < 256; i++) {
        same_map[i] = (uint8_t)i;
        fold_map[i] = (uint8_t)(i >= 'A' && i <= 'Z' ? i + 32 : i);
    }
    one = PyLong_FromLong(1);
    if (one == NULL)
        return NULL;
    if (intern(&str__entries, "_entries") < 0 || intern(&str_max_entries, "max_entries") < 0
        || intern(&str_track, "track") < 0 || intern(&str_seconds, "seconds") < 0
        || intern(&str_count, "count") < 0 || intern(&str_type, "type") < 0
        || intern(&str_sid, "sid") < 0 || intern(&str_threshold, "threshold") < 0
        || intern(&str_ports, "ports") < 0 || intern(&str_window, "window") < 0
        || intern(&str__seen, "_seen") < 0 || intern(&str_limit, "limit") < 0
        || intern(&str_period, "period") < 0 || intern(&str__by_src, "_by_src") < 0
        || intern(&str__by_dst, "_by_dst") < 0 || intern(&str__tracked, "_tracked") < 0
        || intern(&str_popitem, "popitem") < 0 || intern(&str_detection, "detection") < 0
        || intern(&str_by_src, "by_src") < 0
        || intern(&str_kind_detection_filter, "detection_filter") < 0
        || intern(&str_kind_limit, "limit") < 0 || intern(&str_kind_threshold, "threshold") < 0)
        return NULL;
    if (intern(&str_embryos, "embryos") < 0 || intern(&str_next_sweep, "_next_sweep") < 0
        || intern(&str_sweep, "_sweep") < 0 || intern(&str_max_flows, "max_flows") < 0
        || intern(&str_evict, "evict") < 0
        || intern(&str_expired, "expired") < 0 || intern(&str_hatch, "hatch") < 0
        || intern(&str_full, "full") < 0)
        return NULL;
    if (intern(&str_anchored, "anchored") < 0
        || intern(&str_anchored_probe, "anchored_probe") < 0
        || intern(&str_prefilters, "prefilters") < 0
        || intern(&str_move_to_end, "move_to_end") < 0 || intern(&str_gtp, "gtp") < 0
        || intern(&str_packed, "packed") < 0 || intern(&str_packed_gates, "packed_gates") < 0)
        return NULL;
    minus_one = PyLong_FromLong(-1);
    zero = PyLong_FromLong(0);
    four = PyLong_FromLong(4);
    six = PyLong_FromLong(6);
    empty = PyUnicode_FromString("");
    if (minus_one == NULL || zero == NULL || four == NULL || six == NULL || empty == NULL)
        return NULL;
    if (intern(&str_pkt, "pkt") < 0 || intern(&str_ip_packet, "ip:packet") < 0
        || intern(&str_checks, "checks") < 0
        || intern(&str_plain_checks, "plain_checks") < 0
        || intern(&str__scan, "_scan") < 0 || intern(&str__mine, "_mine") < 0
        || intern(&str_reach, "reach") < 0 || intern(&str_prefilter, "prefilter") < 0
        || intern(&str_entries, "entries") < 0 || intern(&str_clear, "clear") < 0
        || intern(&str_reported, "reported") < 0
        || intern(&str_anchored_reach, "anchored_reach") < 0
        || intern(&str_anchored_fast, "anchored_fast") < 0
        || intern(&str_anchor_index, "anchor_index") < 0 || intern(&str_placed, "placed") < 0
        || intern(&str_itype, "itype") < 0
        || intern(&str_icode, "icode") < 0 || intern(&str_contents, "contents") < 0
        || intern(&str_buffer, "buffer") < 0 || intern(&str_transforms, "transforms") < 0
        || intern(&str_candidates, "candidates") < 0)
        return NULL;
    if (intern(&str_payload_scans, "payload_scans") < 0
        || intern(&str_reads_payload, "reads_payload") < 0
        || intern(&str_pending, "pending") < 0 || intern(&str_data, "data") < 0
        || intern(&str_scanned, "scanned") < 0
        || intern(&str_grew, "grew") < 0 || intern(&str_errors, "errors") < 0
        || intern(&str_depth, "depth") < 0 || intern(&str_patterns, "patterns") < 0
        || intern(&str__current, "_current") < 0
        || intern(&str__request, "_request") < 0)
        return NULL;
    if (intern(&str_headers, "headers") < 0 || intern(&str_host, "host") < 0
        || intern(&str_user_agent, "user_agent") < 0 || intern(&str_raw_body, "raw_body") < 0
        || intern(&str_header_text, "header_text") < 0)
        return NULL;
    mod = PyModule_Create(&module);
    if (mod == NULL)
        return NULL;
    for (i = 0; i < (int)(sizeof(types) / sizeof(types[0])); i++)
        if (PyModule_AddType(mod, types[i]) < 0) { /* readies the type, named by tp_name */
            Py_DECREF(mod);
            return NULL;
        }
    if (PyModule_AddIntConstant(mod, "ANCHOR_LIMIT", ANCHOR_LIMIT) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
