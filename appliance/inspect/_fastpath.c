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
 * anchored_probe, prefilters) and plain_for(), exactly as the twin reads them; an anchored
 * probe is checked here, a group without one through the twin's anchored_hit.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h> /* defines _GNU_SOURCE: memmem */
#include <structmember.h>
#include <string.h>

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
    S_TCP_STATE,
    S_TOUCHED,
    S_COUNT
};

static const char *slot_names[S_COUNT] = {
    "app",       "established", "fast_c",  "fast_s",
    "fwd_key",   "gtp_ok",      "key",     "last_ts",
    "packets_to_client", "packets_to_server", "tcp_state", "touched",
};

typedef struct {
    PyObject_HEAD
    PyObject *index;        /* dict: flow key -> Flow */
    PyObject *flows;        /* OrderedDict: client key -> Flow or embryo (LRU order) */
    PyObject *flow_type;    /* the Flow class (objects of exactly this type are read) */
    PyObject *anchored_hit; /* the twin's _anchored_hit(group, data, start, end, established) */
    PyObject *layer_type;   /* decode.Layer, for lookup() */
    PyObject *lookup;       /* the twin's FlowTable.lookup(layer, ts) */
    double idle_timeout;
    Py_ssize_t offsets[S_COUNT];
    Py_ssize_t layer_offsets[6];
} FastPath;

enum { LK_PROTO, LK_SRC, LK_DST, LK_SPORT, LK_DPORT, LK_FLAGS };
static const char *lookup_names[6] = {"proto", "src", "dst", "sport", "dport", "flags"};

static PyObject *one;
static PyObject *str_established, *str_not_established, *str_anchored, *str_anchored_probe,
    *str_prefilters, *str_plain_for, *str_move_to_end, *str_gtp;

/* ---- a Flow's slots ------------------------------------------------------------------ */

static inline PyObject *slot(FastPath *fp, PyObject *flow, int which)
{
    return *(PyObject **)((char *)flow + fp->offsets[which]);
}

static inline void set_slot(FastPath *fp, PyObject *flow, int which, PyObject *value)
{
    PyObject **place = (PyObject **)((char *)flow + fp->offsets[which]);
    PyObject *old = *place;
    Py_INCREF(value);
    *place = value;
    Py_XDECREF(old);
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
    new = PyNumber_Add(old, one);
    if (new == NULL)
        return -1;
    set_slot(fp, flow, which, new);
    Py_DECREF(new);
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

/* Whether group.plain_for(flags, established) is not empty: 1, 0, or -1 on error. */
static int plain_rules(PyObject *group, long flags, int established)
{
    PyObject *cache, *key, *found;
    int result;
    cache = PyObject_GetAttr(group, established ? str_established : str_not_established);
    if (cache == NULL)
        return -1;
    key = PyLong_FromLong(flags);
    if (key == NULL) {
        Py_DECREF(cache);
        return -1;
    }
    found = PyDict_Check(cache) ? PyDict_GetItemWithError(cache, key) : NULL;
    Py_DECREF(cache);
    if (found != NULL) {
        Py_DECREF(key);
        return PyObject_IsTrue(found);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return -1;
    }
    found = PyObject_CallMethodObjArgs(
        group, str_plain_for, key, established ? Py_True : Py_False, NULL);
    Py_DECREF(key);
    if (found == NULL)
        return -1;
    result = PyObject_IsTrue(found);
    Py_DECREF(found);
    return result;
}

/* Truth of group.<name>: 1, 0 or -1. */
static int attr_true(PyObject *group, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(group, name);
    int result;
    if (value == NULL)
        return -1;
    result = PyObject_IsTrue(value);
    Py_DECREF(value);
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

/* _anchored_hit(group, data, start, end, established): 1, 0 or -1 on error. */
static int anchored_hit(FastPath *fp, PyObject *group, PyObject *bytes, Py_ssize_t start,
                        Py_ssize_t end, int established)
{
    PyObject *probe = PyObject_GetAttr(group, str_anchored_probe);
    Py_ssize_t i, count;
    int result = 0;
    if (probe == NULL)
        return -1;
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
        PyObject *found = PyObject_CallFunction(fp->anchored_hit, "OOnnO", group, bytes, start,
                                                end, established ? Py_True : Py_False);
        if (found == NULL)
            return -1;
        result = PyObject_IsTrue(found);
        Py_DECREF(found);
        return result;
    }
}

/* ---- the flow's time and place ------------------------------------------------------- */

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

/* ---- _fast_tcp ----------------------------------------------------------------------- */

/* 1 taken, 0 not, -1 error, 2 no flow under the key (then *missing, if given, is the key:
 * a new reference). */
static int fast_tcp(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes, Py_ssize_t ip,
                    Py_ssize_t end, int tunnel, PyObject **missing)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    PyObject *key, *flow, *fast, *group, *app, *value;
    int to_server, flags, state, established = 1, result = 0, truth;
    Py_ssize_t offset, start;
    double last;

    key = PyBytes_FromStringAndSize((const char *)data + ip + 12, 12);
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
    if (!PyTuple_Check(fast) || PyTuple_GET_SIZE(fast) != 3)
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
    truth = plain_rules(group, flags, established);
    if (truth != 0)
        goto leave_fast;
    offset = data[ip + 32] >> 4;
    start = ip + 20 + (offset << 2);
    if (offset < 5 || start > end)
        goto leave_fast_zero;
    if (start < end) {
        if ((truth = PyObject_IsTrue(PyTuple_GET_ITEM(fast, 0))) <= 0)
            goto leave_fast;
        if ((truth = attr_true(group, str_anchored)) < 0)
            goto leave_fast;
        if (truth && (truth = anchored_hit(fp, group, bytes, start, end, established)) != 0)
            goto leave_fast;
    }
    Py_DECREF(fast);
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

static int fast_gtp(FastPath *fp, PyObject *ts_obj, double ts, PyObject *bytes)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    Py_ssize_t total = data[16] << 8 | data[17];
    Py_ssize_t end = 14 + total;
    PyObject *key, *outer, *fast, *group, *value;
    int to_server, established, truth, result = 0;
    double last;
    unsigned char raw[13];

    if (end > n || total < 76 || (data[38] << 8 | data[39]) != total - 20 || data[42] != 0x30
        || data[43] != 255 || (data[44] << 8 | data[45]) != total - 36
        || (data[46] | data[47] | data[48] | data[49]) == 0 || data[50] != 0x45
        || data[59] != 6 || data[56] & 0x3F || data[57]
        || (data[52] << 8 | data[53]) != total - 36)
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
    if ((truth = attr_true(group, str_prefilters)) != 0
        || (truth = plain_rules(group, -1, established)) != 0)
        goto leave_fast;
    if ((truth = attr_true(group, str_anchored)) < 0)
        goto leave_fast;
    if (truth && (truth = anchored_hit(fp, group, bytes, 42, end, established)) != 0)
        goto leave_fast;
    Py_DECREF(fast);
    truth = fast_tcp(fp, ts_obj, ts, bytes, 50, end, 1, NULL);
    if (truth < 0)
        goto error;
    if (truth != 1)
        goto done;
    if (touch(fp, outer, ts_obj, ts, to_server) < 0)
        goto error;
    result = 1;
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
    return *(PyObject **)((char *)layer + fp->layer_offsets[which]);
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
    return PyObject_Vectorcall(fp->lookup, args, nargs, NULL);
}

/* ---- the entry point ----------------------------------------------------------------- */

static PyObject *FastPath_take(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *ts_obj, *bytes, *key = NULL;
    const unsigned char *data;
    Py_ssize_t n, end;
    double ts;
    int result;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take(ts, data)");
        return NULL;
    }
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
        end = 14 + (data[16] << 8 | data[17]);
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
            return key;
        }
        result = fast_tcp(fp, ts_obj, ts, bytes, 14, end, 0, &key);
        if (result < 0)
            return NULL;
        if (result == 2)
            return key;
        return PyBool_FromLong(result);
    }
    if (data[23] == 17 && data[36] == 0x08 && data[37] == 0x68) {
        result = fast_gtp(fp, ts_obj, ts, bytes);
        if (result < 0)
            return NULL;
        return PyBool_FromLong(result);
    }
    Py_RETURN_FALSE;
}

/* ---- the common frame's decoding ------------------------------------------------------ */

/* Decoder(layer_type, fallback).decode(data, linktype, errors) is decode.decode_packet for
 * the frames most traffic is made of: Ethernet / IPv4, not a fragment, carrying TCP, or UDP
 * that is neither GTP-U nor VXLAN, with nothing wrong in the headers. It fills a Layer's
 * slots as decode_ipv4 does; any other frame (or anything it would count as an error) goes
 * to fallback, decode_packet itself, which decodes and counts as always. */

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

typedef struct {
    PyObject_HEAD
    PyObject *layer_type;
    PyObject *fallback;
    Py_ssize_t offsets[L_COUNT];
} Decoder;

static PyObject *minus_one, *zero, *four, *fourteen;

/* Steals value (NULL: an error already set, -1). */
static inline int put(Decoder *dec, PyObject *layer, int which, PyObject *value)
{
    PyObject **place;
    if (value == NULL)
        return -1;
    place = (PyObject **)((char *)layer + dec->offsets[which]);
    Py_XSETREF(*place, value);
    return 0;
}

static inline PyObject *ref(PyObject *value)
{
    Py_INCREF(value);
    return value;
}

static PyObject *Decoder_decode(Decoder *dec, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *bytes, *layer;
    const unsigned char *data;
    Py_ssize_t n, hlen, total, end, off, thlen, ulen;
    unsigned int proto, sport, dport, flags = 0;
    unsigned long seq = 0;
    long linktype;
    int frag;

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
    hlen = (data[14] & 0x0F) << 2;
    total = data[16] << 8 | data[17];
    if (hlen < 20 || total < hlen || 14 + total > n)
        goto fallback; /* errors, or a short snaplen (counted) */
    end = 14 + total;
    if (14 + hlen > end)
        goto fallback;
    frag = data[20] << 8 | data[21];
    if (frag & 0x3FFF)
        goto fallback; /* a fragment */
    proto = data[23];
    off = 14 + hlen;
    if (proto == 6) {
        if (end - off < 20)
            goto fallback;
        thlen = (data[off + 12] >> 4) << 2;
        if (thlen < 20 || off + thlen > end)
            goto fallback;
        sport = data[off] << 8 | data[off + 1];
        dport = data[off + 2] << 8 | data[off + 3];
        seq = (unsigned long)data[off + 4] << 24 | (unsigned long)data[off + 5] << 16
            | (unsigned long)data[off + 6] << 8 | data[off + 7];
        flags = data[off + 13];
        off += thlen;
    } else if (proto == 17) {
        if (end - off < 8)
            goto fallback;
        sport = data[off] << 8 | data[off + 1];
        dport = data[off + 2] << 8 | data[off + 3];
        if (dport == 4789 && end - off >= 16)
            goto fallback; /* VXLAN */
        if (dport == 2152)
            goto fallback; /* GTP-U */
        ulen = data[off + 4] << 8 | data[off + 5];
        if (ulen < 8)
            goto fallback; /* counted */
        if (ulen <= end - off)
            end = off + ulen;
        off += 8;
    } else {
        goto fallback;
    }

    layer = ((PyTypeObject *)dec->layer_type)->tp_alloc((PyTypeObject *)dec->layer_type, 0);
    if (layer == NULL)
        return NULL;
    if (put(dec, layer, L_FAMILY, ref(four)) < 0
        || put(dec, layer, L_SRC, PyBytes_FromStringAndSize((const char *)data + 26, 4)) < 0
        || put(dec, layer, L_DST, PyBytes_FromStringAndSize((const char *)data + 30, 4)) < 0
        || put(dec, layer, L_PROTO, PyLong_FromLong(proto)) < 0
        || put(dec, layer, L_DEPTH, ref(zero)) < 0
        || put(dec, layer, L_SPORT, PyLong_FromLong(sport)) < 0
        || put(dec, layer, L_DPORT, PyLong_FromLong(dport)) < 0
        || put(dec, layer, L_FLAGS, PyLong_FromLong(flags)) < 0
        || put(dec, layer, L_SEQ, PyLong_FromUnsignedLong(seq)) < 0
        || put(dec, layer, L_TRUNCATED, ref(Py_False)) < 0
        || put(dec, layer, L_ICMP_TYPE, ref(minus_one)) < 0
        || put(dec, layer, L_ICMP_CODE, ref(minus_one)) < 0
        || put(dec, layer, L_FRAGMENT, ref(Py_False)) < 0
        || put(dec, layer, L_FRAG, ref(Py_None)) < 0
        || put(dec, layer, L_PAYLOAD,
               PyBytes_FromStringAndSize((const char *)data + off, end - off)) < 0
        || put(dec, layer, L_GTP, ref(Py_None)) < 0 || put(dec, layer, L_TUNNEL, ref(Py_None)) < 0
        || put(dec, layer, L_RAW, ref(bytes)) < 0 || put(dec, layer, L_IP_AT, ref(fourteen)) < 0) {
        Py_DECREF(layer);
        return NULL;
    }
    return layer;
fallback:
    return PyObject_Vectorcall(dec->fallback, args, nargs, NULL);
}

static int Decoder_init(Decoder *dec, PyObject *args, PyObject *kwargs)
{
    PyObject *layer_type, *fallback;
    int i;
    static char *names[] = {"layer_type", "fallback", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O:Decoder", names, &PyType_Type,
                                     &layer_type, &fallback))
        return -1;
    if (((PyTypeObject *)layer_type)->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "layer_type: a class of slots only");
        return -1;
    }
    for (i = 0; i < L_COUNT; i++) {
        PyObject *descr = PyObject_GetAttrString(layer_type, layer_names[i]);
        PyMemberDef *member;
        if (descr == NULL)
            return -1;
        if (Py_TYPE(descr) != &PyMemberDescr_Type) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "layer_type.%s is not a slot", layer_names[i]);
            return -1;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "layer_type.%s is not an object slot", layer_names[i]);
            return -1;
        }
        dec->offsets[i] = member->offset;
        Py_DECREF(descr);
    }
    Py_INCREF(layer_type);
    Py_XSETREF(dec->layer_type, layer_type);
    Py_INCREF(fallback);
    Py_XSETREF(dec->fallback, fallback);
    return 0;
}

static int Decoder_traverse(Decoder *dec, visitproc visit, void *arg)
{
    Py_VISIT(dec->layer_type);
    Py_VISIT(dec->fallback);
    return 0;
}

static int Decoder_clear(Decoder *dec)
{
    Py_CLEAR(dec->layer_type);
    Py_CLEAR(dec->fallback);
    return 0;
}

static void Decoder_dealloc(Decoder *dec)
{
    PyObject_GC_UnTrack(dec);
    Decoder_clear(dec);
    Py_TYPE(dec)->tp_free((PyObject *)dec);
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))Decoder_decode, METH_FASTCALL,
     "decode(data, linktype, errors) -> Layer or None, as decode.decode_packet"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appliance.inspect._fastpath.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "decode_packet for the common Ethernet / IPv4 frame",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_traverse = (traverseproc)Decoder_traverse,
    .tp_clear = (inquiry)Decoder_clear,
    .tp_methods = Decoder_methods,
};

/* ---- the type ------------------------------------------------------------------------ */

static int FastPath_init(FastPath *fp, PyObject *args, PyObject *kwargs)
{
    PyObject *index, *flows, *flow_type, *hit, *layer_type, *lookup;
    double idle;
    int i;
    static char *names[] = {"index",        "flows",      "idle_timeout", "flow_type",
                            "anchored_hit", "layer_type", "lookup",       NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OdO!OO!O:FastPath", names, &PyDict_Type,
                                     &index, &flows, &idle, &PyType_Type, &flow_type, &hit,
                                     &PyType_Type, &layer_type, &lookup))
        return -1;
    for (i = 0; i < 6; i++) {
        PyObject *descr = PyObject_GetAttrString(layer_type, lookup_names[i]);
        PyMemberDef *member;
        if (descr == NULL)
            return -1;
        if (Py_TYPE(descr) != &PyMemberDescr_Type) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "layer_type.%s is not a slot", lookup_names[i]);
            return -1;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "layer_type.%s is not an object slot",
                         lookup_names[i]);
            return -1;
        }
        fp->layer_offsets[i] = member->offset;
        Py_DECREF(descr);
    }
    for (i = 0; i < S_COUNT; i++) {
        PyObject *descr = PyObject_GetAttrString(flow_type, slot_names[i]);
        PyMemberDef *member;
        if (descr == NULL)
            return -1;
        if (Py_TYPE(descr) != &PyMemberDescr_Type) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "flow_type.%s is not a slot", slot_names[i]);
            return -1;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "flow_type.%s is not an object slot", slot_names[i]);
            return -1;
        }
        fp->offsets[i] = member->offset;
        Py_DECREF(descr);
    }
    Py_INCREF(index);
    Py_XSETREF(fp->index, index);
    Py_INCREF(flows);
    Py_XSETREF(fp->flows, flows);
    Py_INCREF(flow_type);
    Py_XSETREF(fp->flow_type, flow_type);
    Py_INCREF(hit);
    Py_XSETREF(fp->anchored_hit, hit);
    Py_INCREF(layer_type);
    Py_XSETREF(fp->layer_type, layer_type);
    Py_INCREF(lookup);
    Py_XSETREF(fp->lookup, lookup);
    fp->idle_timeout = idle;
    return 0;
}

static int FastPath_traverse(FastPath *fp, visitproc visit, void *arg)
{
    Py_VISIT(fp->index);
    Py_VISIT(fp->flows);
    Py_VISIT(fp->flow_type);
    Py_VISIT(fp->anchored_hit);
    Py_VISIT(fp->layer_type);
    Py_VISIT(fp->lookup);
    return 0;
}

static int FastPath_clear(FastPath *fp)
{
    Py_CLEAR(fp->index);
    Py_CLEAR(fp->flows);
    Py_CLEAR(fp->flow_type);
    Py_CLEAR(fp->anchored_hit);
    Py_CLEAR(fp->layer_type);
    Py_CLEAR(fp->lookup);
    return 0;
}

static void FastPath_dealloc(FastPath *fp)
{
    PyObject_GC_UnTrack(fp);
    FastPath_clear(fp);
    Py_TYPE(fp)->tp_free((PyObject *)fp);
}

static PyMethodDef FastPath_methods[] = {
    {"take", (PyCFunction)(void (*)(void))FastPath_take, METH_FASTCALL,
     "take(ts, data) -> True (accounted for), False (full path) or the flow key of an "
     "IPv4/TCP packet no flow holds (bytes)"},
    {"lookup", (PyCFunction)(void (*)(void))FastPath_lookup, METH_FASTCALL,
     "lookup(layer, ts) -> (flow, to_server), as FlowTable.lookup"},
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
};

static int intern(PyObject **place, const char *text)
{
    *place = PyUnicode_InternFromString(text);
    return *place == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *mod;
    one = PyLong_FromLong(1);
    if (one == NULL)
        return NULL;
    if (intern(&str_established, "established") < 0
        || intern(&str_not_established, "not_established") < 0
        || intern(&str_anchored, "anchored") < 0
        || intern(&str_anchored_probe, "anchored_probe") < 0
        || intern(&str_prefilters, "prefilters") < 0 || intern(&str_plain_for, "plain_for") < 0
        || intern(&str_move_to_end, "move_to_end") < 0 || intern(&str_gtp, "gtp") < 0)
        return NULL;
    minus_one = PyLong_FromLong(-1);
    zero = PyLong_FromLong(0);
    four = PyLong_FromLong(4);
    fourteen = PyLong_FromLong(14);
    if (minus_one == NULL || zero == NULL || four == NULL || fourteen == NULL)
        return NULL;
    if (PyType_Ready(&FastPathType) < 0 || PyType_Ready(&DecoderType) < 0)
        return NULL;
    mod = PyModule_Create(&module);
    if (mod == NULL)
        return NULL;
    Py_INCREF(&FastPathType);
    if (PyModule_AddObject(mod, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(&FastPathType);
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(mod, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
