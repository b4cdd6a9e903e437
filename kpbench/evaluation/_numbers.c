/* JSON lists of numbers into a float64 buffer, with exactly the values Python's json module gives them.
 *
 * The compiled form of `kpbench.evaluation.jsonnumbers` (which is the reference, and the fallback where this
 * module was not built). Input: texts that msgspec has already checked to be valid JSON (msgspec.Raw), each
 * expected to be a flat list of `width` numbers.
 *
 * A number's value is the one json.loads gives: float(token) for a token with a '.' or an exponent, and
 * float(int(token)) for an integer (so "-0" is +0.0). Both are the correctly rounded double of the decimal.
 *   - Fast path (Clinger, "How to read floating point numbers accurately", PLDI 1990): when the decimal's
 *     significand m has at most 19 digits, m <= 2**53, and its power of ten e satisfies |e| <= 22, m and 10**|e|
 *     are exact doubles and one IEEE multiplication or division rounds once: the correctly rounded value.
 *     (This needs double arithmetic without excess precision: FLT_EVAL_METHOD == 0, as on x86-64 and ARM64;
 *     elsewhere every token takes the second path.)
 *   - Where long double is x87 extended precision (a 64-bit significand: x86-64 Linux and macOS), a decimal with
 *     at most 19 significant digits and |e| <= 27 (m and 10**|e| exact there) is divided or multiplied once in
 *     extended precision, which rounds correctly to 64 bits; rounding that to a double gives the correctly
 *     rounded double unless it lies exactly halfway between two doubles (a midpoint has 54 significant bits, so
 *     no other midpoint can lie between the decimal and its 64-bit rounding). The halfway case, its low 11 bits
 *     100 0000 0000, goes to the last path. This is how float32 reprs (17 digits, above 2**53) are read.
 *   - Every other token is read by PyOS_string_to_double, the function behind Python's float(str).
 * A value out of float range (json gives inf for a float, OverflowError for an integer) rejects the input, as
 * does any list that is not exactly `width` numbers (nested lists, other values, another length).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define FAST_PATH 1
#else
#define FAST_PATH 0
#endif

static const double POW10[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#if LDBL_MANT_DIG == 64 && (defined(__x86_64__) || defined(__i386__))
#define EXTENDED_PATH 1
static const long double POW10L[28] = {
    1e0L, 1e1L, 1e2L, 1e3L, 1e4L, 1e5L, 1e6L, 1e7L, 1e8L, 1e9L, 1e10L, 1e11L, 1e12L, 1e13L,
    1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L,
};
#else
#define EXTENDED_PATH 0
#endif

#define MAX_TOKEN 512 /* longer tokens (absurd digit strings) are copied to the heap */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Python's float() of the token [start, end); -1 with an exception set on failure. Called without the GIL (the
 * parse runs with it released): it takes the GIL for PyOS_string_to_double, which may set an exception. */
static int slow_value(const char *start, const char *end, double *value) {
    char small[MAX_TOKEN + 1];
    size_t length = (size_t)(end - start);
    char *text = length <= MAX_TOKEN ? small : malloc(length + 1);
    PyGILState_STATE gil = PyGILState_Ensure();
    int failed = 0;
    if (text == NULL) {
        PyErr_NoMemory();
        failed = 1;
    } else {
        memcpy(text, start, length);
        text[length] = '\0';
        char *stop = NULL;
        /* overflow_exception NULL: out of range gives +-inf (no exception), which the caller rejects */
        *value = PyOS_string_to_double(text, &stop, NULL);
        failed = (*value == -1.0 && PyErr_Occurred()) || stop != text + length;
        if (failed && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "not a number");
        if (text != small) free(text);
    }
    PyGILState_Release(gil);
    return failed ? -1 : 0;
}

/* The digits at *cursor into the decimal significand, *cursor past them: at most 19 significant digits (leading
 * zeros do not count); a longer significand sets *slow (the token then goes to Python). Returns how many digits
 * went into the significand (for digits after the '.', the power of ten to take off). */
static int read_digits(const char **cursor, const char *end, uint64_t *mantissa, int *significant, int *slow) {
    const char *p = *cursor;
    int taken = 0;
    for (; p < end && is_digit(*p); p++) {
        if (*significant < 19) {
            *mantissa = *mantissa * 10 + (uint64_t)(*p - '0');
            if (*mantissa) (*significant)++;
            taken++;
        } else {
            *slow = 1;
        }
    }
    *cursor = p;
    return taken;
}

/* One JSON number at *cursor (before `end`): its value into *value, *cursor past it.
 * 1: read; 0: not a number here or out of float range (reject the input); -1: an exception. */
static int read_number(const char **cursor, const char *end, double *value) {
    const char *p = *cursor, *start = p;
    int negative = 0, integer = 1, slow = 0;
    uint64_t mantissa = 0;
    int significant = 0;  /* digits in mantissa, leading zeros not counted */
    long exponent10 = 0;  /* the decimal's power of ten */
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end || !is_digit(*p)) return 0;
    read_digits(&p, end, &mantissa, &significant, &slow);
    if (p < end && *p == '.') {
        integer = 0;
        p++;
        if (p >= end || !is_digit(*p)) return 0;
        exponent10 -= read_digits(&p, end, &mantissa, &significant, &slow);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = 0;
        p++;
        int exponent_negative = 0;
        if (p < end && (*p == '+' || *p == '-')) exponent_negative = *p++ == '-';
        if (p >= end || !is_digit(*p)) return 0;
        long written = 0;
        for (; p < end && is_digit(*p); p++) {
            if (written < 100000) written = written * 10 + (*p - '0');
        }
        if (written >= 100000) slow = 1;  /* capped: the token's own value is Python's to read */
        exponent10 += exponent_negative ? -written : written;
    }
    *cursor = p;
    if (integer && mantissa == 0 && !slow) {  /* json reads "-0" as the int 0 */
        *value = 0.0;
        return 1;
    }
    if (FAST_PATH && !slow && mantissa <= ((uint64_t)1 << 53) && exponent10 >= -22 && exponent10 <= 22) {
        double m = (double)mantissa;
        *value = exponent10 < 0 ? m / POW10[-exponent10] : m * POW10[exponent10];
        if (negative) *value = -*value;
        return 1;
    }
#if EXTENDED_PATH
    if (!slow && exponent10 >= -27 && exponent10 <= 27) {
        long double m = (long double)mantissa;
        long double q = exponent10 < 0 ? m / POW10L[-exponent10] : m * POW10L[exponent10];
        uint64_t significand;
        memcpy(&significand, &q, sizeof significand); /* x86: the first 8 bytes hold the 64-bit significand */
        if ((significand & 0x7FF) != 0x400) {
            *value = (double)q;
            if (negative) *value = -*value;
            return 1;
        }
    }
#endif
    if (slow_value(start, p, value) < 0) return -1;
    return isfinite(*value) ? 1 : 0;
}

/* One text: '[' then `width` numbers separated by ',' then ']' (JSON whitespace anywhere between).
 * 1: read into out[0:width]; 0: reject; -1: an exception. */
static int read_list(const char *p, const char *end, Py_ssize_t width, double *out) {
    while (p < end && is_space(*p)) p++;
    if (p >= end || *p != '[') return 0;
    p++;
    for (Py_ssize_t i = 0; i < width; i++) {
        while (p < end && is_space(*p)) p++;
        int read = read_number(&p, end, out + i);
        if (read != 1) return read;
        while (p < end && is_space(*p)) p++;
        if (p >= end || *p != (i + 1 < width ? ',' : ']')) return 0;
        p++;
    }
    while (p < end && is_space(*p)) p++;
    return p == end;
}

PyDoc_STRVAR(number_lists_doc,
"number_lists_into(texts, width, out) -> bool\n\n"
"Read each of `texts` (objects with the buffer protocol, valid JSON) as a list of `width` numbers into `out`\n"
"(a writable C-contiguous float64 buffer of len(texts) * width values), with the values json.loads gives.\n"
"False when one text is not such a list or holds a value out of float range.");

static PyObject *number_lists_into(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *texts, *out_object;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "OnO", &texts, &width, &out_object)) return NULL;
    PyObject *items = PySequence_Fast(texts, "texts must be a sequence");
    if (items == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    Py_buffer out;
    if (PyObject_GetBuffer(out_object, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(items);
        return NULL;
    }
    int result = 1;
    Py_ssize_t held = 0;
    Py_buffer *views = NULL;
    if (width < 0 || (width > 0 && count > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / width)
        || out.len != (Py_ssize_t)sizeof(double) * count * width) {
        PyErr_SetString(PyExc_ValueError, "out must hold len(texts) * width float64 values");
        result = -1;
    } else if ((views = PyMem_New(Py_buffer, count > 0 ? count : 1)) == NULL) {
        PyErr_NoMemory();
        result = -1;
    }
    for (; result == 1 && held < count; held++) {  /* the texts' bytes, held while the GIL is released */
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(items, held), &views[held], PyBUF_SIMPLE) < 0) result = -1;
    }
    if (result == 1) {
        double *values = (double *)out.buf;
        /* The parse needs no Python object: other threads run meanwhile (several parse at once, each its share). */
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; result == 1 && i < count; i++) {
            const char *start = (const char *)views[i].buf;
            result = read_list(start, start + views[i].len, width, values + i * width);
        }
        Py_END_ALLOW_THREADS
    } else if (held > 0) {
        held--;  /* the view that failed was not taken */
    }
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyBuffer_Release(&out);
    Py_DECREF(items);
    if (result < 0) return NULL;
    return PyBool_FromLong(result);
}

static PyMethodDef methods[] = {
    {"number_lists_into", number_lists_into, METH_VARARGS, number_lists_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef numbers_module = {
    PyModuleDef_HEAD_INIT, "_numbers",
    "JSON lists of numbers into float64, json's values bit for bit (see kpbench.evaluation.jsonnumbers).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__numbers(void) {
    PyObject *module = PyModule_Create(&numbers_module);
    if (module != NULL && (PyModule_AddIntConstant(module, "FAST_PATH", FAST_PATH) < 0
                           || PyModule_AddIntConstant(module, "EXTENDED_PATH", EXTENDED_PATH) < 0)) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
