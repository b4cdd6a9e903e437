/* COCOeval's greedy matching of detections to GTs, compiled: pycocotools' own loop (cocoeval.py, evaluateImg),
 * run over every unit (image, category) of an evaluation at once.
 *
 * The vectorized evaluator (`kpbench.evaluation.vectorized`) computes the similarities (OKS or IoU, with numpy,
 * exactly as pycocotools computes them) and calls this for the matching; where this module was not built it
 * matches with numpy (closed forms and padded buckets), with the same results (tested). Per unit, area range and
 * threshold, as evaluateImg does:
 *
 *     GTs ordered non-ignored first (a stable order: annotation order within each kind);
 *     for each detection by rank: best = min(t, 1 - 1e-10), m = none;
 *         for each GT g in that order:
 *             skip g if it is taken and not a crowd region;
 *             stop if m is a non-ignored GT and g is ignored;
 *             skip g if sim < best;
 *             best = sim, m = g;
 *         if m: the detection takes m (dtIg = m's ignore flag; gtm[m] = the detection).
 *
 * Comparisons are C's on doubles, which are Python's: a NaN similarity passes `sim < best` (false) and then lets
 * every later GT replace it, as in pycocotools. Units are independent, so the loop runs without the GIL (several
 * threads may each take a share of the units).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_buffer view;
    int held;
} Array;

/* The kinds of array this takes, by struct format character (after any byte-order prefix). */
enum Kind { INT64, INT32, FLOAT64, FLAG };

static int format_is(const char *format, enum Kind kind) {
    if (format == NULL) return kind == FLAG;  /* "B" by default */
    if (*format == '<' || *format == '=' || *format == '@') format++;
    char c = *format;
    if (format[0] == '\0' || format[1] != '\0') return 0;
    switch (kind) {
        case INT64: return c == 'q' || c == 'l';  /* numpy's int64 is 'l' where long has 64 bits */
        case INT32: return c == 'i' || c == 'l';
        case FLOAT64: return c == 'd';
        case FLAG: return c == '?' || c == 'B' || c == 'b';
    }
    return 0;
}

/* A C-contiguous array of `count` items of `kind` (`count` < 0: any count, returned in *count_out). */
static int get_array(PyObject *object, Array *array, enum Kind kind, Py_ssize_t count, int writable,
                     const char *name, Py_ssize_t *count_out) {
    static const Py_ssize_t sizes[] = {8, 4, 8, 1};
    Py_ssize_t itemsize = sizes[kind];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, &array->view, flags) < 0) return -1;
    array->held = 1;
    if (array->view.itemsize != itemsize || !format_is(array->view.format, kind)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %s", name,
                     kind == INT64 ? "int64" : kind == INT32 ? "int32" : kind == FLOAT64 ? "float64" : "bool or uint8");
        return -1;
    }
    if (count >= 0 && array->view.len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", name, count, array->view.len / itemsize);
        return -1;
    }
    if (count_out != NULL) *count_out = array->view.len / itemsize;
    return 0;
}

static void release(Array *arrays, int count) {
    for (int i = 0; i < count; i++) {
        if (arrays[i].held) PyBuffer_Release(&arrays[i].view);
    }
}

PyDoc_STRVAR(match_units_doc,
"match_units(pair_sim, pair_start, dt_start, dt_count, gt_start, gt_count, gt_ignored, areas, gt_crowd,\n"
"            thresholds, kept, kept_match, kept_dt_ignore, gt_match) -> None\n\n"
"COCOeval's matching of U units. pair_sim (P,) float64: each unit's similarities from pair_start[u] (int64),\n"
"detection-major (rank r, GT slot s at r * gt_count[u] + s). dt_start, dt_count (U,) int64: the unit's kept\n"
"detections (positions into `kept`, by rank); gt_start, gt_count (U,) int64: its GTs (positions into G).\n"
"gt_ignored (A, G) uint8 per area range (A = areas); gt_crowd (G,) uint8; thresholds (T,) float64, each already\n"
"min(t, 1 - 1e-10); kept (K,) int64 results index of each kept detection. Writes, for c = a * T + t: kept_match\n"
"(C, K) int32 GT position of each matched detection, kept_dt_ignore (C, K) uint8 its GT's ignore flag, gt_match\n"
"(C, G) int32 results index of the last detection matched to each GT. Entries of unmatched ones are untouched.");

static PyObject *match_units(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *objects[13];
    Py_ssize_t areas;
    if (!PyArg_ParseTuple(args, "OOOOOOOnOOOOOO", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4],
                          &objects[5], &objects[6], &areas, &objects[7], &objects[8], &objects[9], &objects[10],
                          &objects[11], &objects[12])) {
        return NULL;
    }
    Array a[13];
    memset(a, 0, sizeof a);
    Py_ssize_t pairs, units, ignored_size, num_gt, num_thresholds, num_kept, match_size, gt_match_size;
    int failed = get_array(objects[0], &a[0], FLOAT64, -1, 0, "pair_sim", &pairs) < 0
        || get_array(objects[1], &a[1], INT64, -1, 0, "pair_start", &units) < 0
        || get_array(objects[2], &a[2], INT64, units, 0, "dt_start", NULL) < 0
        || get_array(objects[3], &a[3], INT64, units, 0, "dt_count", NULL) < 0
        || get_array(objects[4], &a[4], INT64, units, 0, "gt_start", NULL) < 0
        || get_array(objects[5], &a[5], INT64, units, 0, "gt_count", NULL) < 0
        || get_array(objects[6], &a[6], FLAG, -1, 0, "gt_ignored", &ignored_size) < 0
        || get_array(objects[7], &a[7], FLAG, -1, 0, "gt_crowd", &num_gt) < 0
        || get_array(objects[8], &a[8], FLOAT64, -1, 0, "thresholds", &num_thresholds) < 0
        || get_array(objects[9], &a[9], INT64, -1, 0, "kept", &num_kept) < 0
        || get_array(objects[10], &a[10], INT32, -1, 1, "kept_match", &match_size) < 0
        || get_array(objects[11], &a[11], FLAG, match_size, 1, "kept_dt_ignore", NULL) < 0
        || get_array(objects[12], &a[12], INT32, -1, 1, "gt_match", &gt_match_size) < 0;
    Py_ssize_t combos = areas * num_thresholds;
    if (!failed && (areas < 0 || ignored_size != areas * num_gt || match_size != combos * num_kept
                    || gt_match_size != combos * num_gt)) {
        PyErr_SetString(PyExc_ValueError, "match_units: the shapes of gt_ignored, kept_match and gt_match disagree");
        failed = 1;
    }
    /* Every index in range before the GIL is released (a mistake upstream is an exception, not a stray write). */
    Py_ssize_t most_gts = 0;
    const int64_t *gt_count = failed ? NULL : (const int64_t *)a[5].view.buf;
    for (Py_ssize_t u = 0; !failed && u < units; u++) {
        int64_t start = ((const int64_t *)a[1].view.buf)[u], d0 = ((const int64_t *)a[2].view.buf)[u];
        int64_t dets = ((const int64_t *)a[3].view.buf)[u], g0 = ((const int64_t *)a[4].view.buf)[u];
        int64_t gts = gt_count[u];
        if (dets < 0 || gts < 0 || start < 0 || d0 < 0 || g0 < 0 || d0 > num_kept - dets || g0 > num_gt - gts
            || (dets > 0 && gts > (pairs - start) / dets)) {
            PyErr_Format(PyExc_ValueError, "match_units: unit %zd reaches outside the arrays", u);
            failed = 1;
        }
        if (gts > most_gts) most_gts = gts;
    }
    for (Py_ssize_t k = 0; !failed && k < num_kept; k++) {
        int64_t index = ((const int64_t *)a[9].view.buf)[k];
        if (index < 0 || index > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "match_units: kept holds an index outside int32");
            failed = 1;
        }
    }
    int64_t *order = NULL;
    uint8_t *taken = NULL;
    if (!failed) {
        order = PyMem_New(int64_t, most_gts + 1);
        taken = PyMem_New(uint8_t, most_gts + 1);
        if (order == NULL || taken == NULL) {
            PyErr_NoMemory();
            failed = 1;
        }
    }
    if (!failed) {
        const double *sim_all = (const double *)a[0].view.buf;
        const int64_t *pair_start = (const int64_t *)a[1].view.buf;
        const int64_t *dt_start = (const int64_t *)a[2].view.buf;
        const int64_t *dt_count = (const int64_t *)a[3].view.buf;
        const int64_t *gt_start = (const int64_t *)a[4].view.buf;
        const uint8_t *ignored_all = (const uint8_t *)a[6].view.buf;
        const uint8_t *crowd_all = (const uint8_t *)a[7].view.buf;
        const double *thresholds = (const double *)a[8].view.buf;
        const int64_t *kept = (const int64_t *)a[9].view.buf;
        int32_t *kept_match = (int32_t *)a[10].view.buf;
        uint8_t *kept_dt_ignore = (uint8_t *)a[11].view.buf;
        int32_t *gt_match = (int32_t *)a[12].view.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t u = 0; u < units; u++) {
            int64_t dets = dt_count[u], gts = gt_count[u], g0 = gt_start[u], d0 = dt_start[u];
            if (dets <= 0 || gts <= 0) continue;
            const double *sim = sim_all + pair_start[u];
            const uint8_t *crowd = crowd_all + g0;
            for (Py_ssize_t area = 0; area < areas; area++) {
                const uint8_t *ignored = ignored_all + area * num_gt + g0;
                int64_t n = 0;  /* GT slots, non-ignored first, each kind in annotation order */
                for (int64_t s = 0; s < gts; s++) {
                    if (!ignored[s]) order[n++] = s;
                }
                for (int64_t s = 0; s < gts; s++) {
                    if (ignored[s]) order[n++] = s;
                }
                for (Py_ssize_t t = 0; t < num_thresholds; t++) {
                    Py_ssize_t c = area * num_thresholds + t;
                    memset(taken, 0, (size_t)gts);
                    for (int64_t r = 0; r < dets; r++) {
                        const double *row = sim + r * gts;
                        double best = thresholds[t];
                        int64_t m = -1;
                        for (int64_t j = 0; j < gts; j++) {
                            int64_t s = order[j];
                            if (taken[s] && !crowd[s]) continue;
                            if (m > -1 && !ignored[m] && ignored[s]) break;
                            if (row[s] < best) continue;
                            best = row[s];
                            m = s;
                        }
                        if (m == -1) continue;
                        taken[m] = 1;
                        kept_match[c * num_kept + d0 + r] = (int32_t)(g0 + m);
                        kept_dt_ignore[c * num_kept + d0 + r] = ignored[m];
                        gt_match[c * num_gt + g0 + m] = (int32_t)kept[d0 + r];
                    }
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(order);
    PyMem_Free(taken);
    release(a, 13);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"match_units", match_units, METH_VARARGS, match_units_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef matching_module = {
    PyModuleDef_HEAD_INIT, "_matching", "COCOeval's greedy matching, compiled (see kpbench.evaluation.vectorized).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__matching(void) { return PyModule_Create(&matching_module); }
