#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct series {
    char **values;
    double value;
};

struct metrics_family {
    char *name;
    char *help;
    enum metrics_type type;
    char **label_names;
    size_t nlabels;
    pthread_mutex_t lock;
    struct series *series;
    size_t nseries, cap;
};

static void free_strings(char **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

struct metrics_family *metrics_family_new(const char *name, const char *help,
                                          enum metrics_type type, const char *const *label_names)
{
    struct metrics_family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    size_t n = 0;
    while (label_names && label_names[n])
        n++;
    f->name = strdup(name);
    f->help = strdup(help);
    f->label_names = calloc(n ? n : 1, sizeof *f->label_names);
    f->nlabels = n;
    f->type = type;
    bool ok = f->name && f->help && f->label_names;
    for (size_t i = 0; ok && i < n; i++) {
        f->label_names[i] = strdup(label_names[i]);
        ok = f->label_names[i] != NULL;
    }
    if (!ok) {
        metrics_family_free(f);
        return NULL;
    }
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

void metrics_family_free(struct metrics_family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nseries; i++)
        free_strings(f->series[i].values, f->nlabels);
    free(f->series);
    free_strings(f->label_names, f->nlabels);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static struct series *find_or_add(struct metrics_family *f, const char *const *values)
{
    for (size_t i = 0; i < f->nseries; i++) {
        size_t j = 0;
        while (j < f->nlabels && strcmp(f->series[i].values[j], values[j]) == 0)
            j++;
        if (j == f->nlabels)
            return &f->series[i];
    }
    if (f->nseries == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct series *grown = realloc(f->series, cap * sizeof *grown);
        if (!grown)
            return NULL;
        f->series = grown;
        f->cap = cap;
    }
    char **copy = calloc(f->nlabels ? f->nlabels : 1, sizeof *copy);
    if (!copy)
        return NULL;
    for (size_t j = 0; j < f->nlabels; j++) {
        copy[j] = strdup(values[j] ? values[j] : "");
        if (!copy[j]) {
            free_strings(copy, j);
            return NULL;
        }
    }
    struct series *s = &f->series[f->nseries++];
    s->values = copy;
    s->value = 0;
    return s;
}

void metrics_add(struct metrics_family *f, const char *const *label_values, double delta)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_or_add(f, label_values);
    if (s)
        s->value += delta;
    pthread_mutex_unlock(&f->lock);
}

size_t metrics_remove(struct metrics_family *f, const char *label, const char *value)
{
    if (!f || !label || !value)
        return 0;
    size_t index = 0;
    while (index < f->nlabels && strcmp(f->label_names[index], label) != 0)
        index++;
    if (index == f->nlabels)
        return 0;
    pthread_mutex_lock(&f->lock);
    size_t kept = 0;
    for (size_t i = 0; i < f->nseries; i++) {
        if (strcmp(f->series[i].values[index], value) == 0)
            free_strings(f->series[i].values, f->nlabels);
        else
            f->series[kept++] = f->series[i]; /* first-seen order is kept */
    }
    size_t removed = f->nseries - kept;
    f->nseries = kept;
    pthread_mutex_unlock(&f->lock);
    return removed;
}

void metrics_set(struct metrics_family *f, const char *const *label_values, double value)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_or_add(f, label_values);
    if (s)
        s->value = value;
    pthread_mutex_unlock(&f->lock);
}

void metrics_family_write(struct metrics_family *f, struct strbuf *out)
{
    if (!f)
        return;
    metrics_write_header(out, f->name, f->help, f->type == METRICS_COUNTER ? "counter" : "gauge");
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->nseries; i++)
        metrics_write_sample(out, f->name, (const char *const *)f->label_names,
                             (const char *const *)f->series[i].values, f->nlabels,
                             f->series[i].value);
    pthread_mutex_unlock(&f->lock);
}

void metrics_write_header(struct strbuf *out, const char *name, const char *help, const char *type)
{
    strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_write_scalar(struct strbuf *out, const char *name, const char *help, const char *type,
                          double value)
{
    metrics_write_header(out, name, help, type);
    metrics_write_sample(out, name, NULL, NULL, 0, value);
}

void metrics_escape_label_value(struct strbuf *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            strbuf_puts(out, "\\\\");
        else if (*p == '"')
            strbuf_puts(out, "\\\"");
        else if (*p == '\n')
            strbuf_puts(out, "\\n");
        else
            strbuf_putc(out, *p);
    }
}

static void write_value(struct strbuf *out, double value)
{
    if (isnan(value))
        strbuf_puts(out, "NaN");
    else if (isinf(value))
        strbuf_puts(out, value > 0 ? "+Inf" : "-Inf");
    else if (value == (double)(long long)value && fabs(value) < 1e15)
        strbuf_printf(out, "%lld", (long long)value);
    else
        strbuf_printf(out, "%.17g", value);
}

void metrics_write_sample(struct strbuf *out, const char *name, const char *const *label_names,
                          const char *const *label_values, size_t nlabels, double value)
{
    strbuf_puts(out, name);
    if (nlabels) {
        strbuf_putc(out, '{');
        for (size_t i = 0; i < nlabels; i++) {
            if (i)
                strbuf_putc(out, ',');
            strbuf_printf(out, "%s=\"", label_names[i]);
            metrics_escape_label_value(out, label_values[i] ? label_values[i] : "");
            strbuf_putc(out, '"');
        }
        strbuf_putc(out, '}');
    }
    strbuf_putc(out, ' ');
    write_value(out, value);
    strbuf_putc(out, '\n');
}

#define HISTOGRAM_LABELS_MAX 4

void metrics_write_histogram_labels(struct strbuf *out, const char *name,
                                    const char *const *label_names, const char *const *label_values,
                                    size_t nlabels, const double *bounds, const uint64_t *buckets,
                                    size_t nbuckets, double sum)
{
    if (nlabels > HISTOGRAM_LABELS_MAX)
        nlabels = HISTOGRAM_LABELS_MAX;
    /* the series' own labels, then `le` */
    const char *names[HISTOGRAM_LABELS_MAX + 1], *values[HISTOGRAM_LABELS_MAX + 1];
    for (size_t i = 0; i < nlabels; i++) {
        names[i] = label_names[i];
        values[i] = label_values[i];
    }
    names[nlabels] = "le";
    char series[128], le[32];
    snprintf(series, sizeof series, "%s_bucket", name);
    uint64_t cumulative = 0;
    for (size_t b = 0; b < nbuckets; b++) {
        if (b + 1 < nbuckets)
            snprintf(le, sizeof le, "%g", bounds[b]);
        else
            snprintf(le, sizeof le, "+Inf");
        cumulative += buckets[b];
        values[nlabels] = le;
        metrics_write_sample(out, series, names, values, nlabels + 1, (double)cumulative);
    }
    snprintf(series, sizeof series, "%s_sum", name);
    metrics_write_sample(out, series, names, values, nlabels, sum);
    snprintf(series, sizeof series, "%s_count", name);
    metrics_write_sample(out, series, names, values, nlabels, (double)cumulative);
}

void metrics_write_histogram(struct strbuf *out, const char *name, const char *label,
                             const char *value, const double *bounds, const uint64_t *buckets,
                             size_t nbuckets, double sum)
{
    metrics_write_histogram_labels(out, name, &label, &value, 1, bounds, buckets, nbuckets, sum);
}

const double metrics_sync_bounds[METRICS_SYNC_BUCKETS - 1] = {25e-6, 50e-6,  100e-6, 250e-6, 500e-6,
                                                              1e-3,  2.5e-3, 5e-3,   10e-3,  25e-3,
                                                              50e-3, 100e-3, 250e-3, 1.0};
