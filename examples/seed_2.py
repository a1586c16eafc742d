"""The seed document's example 2, unchanged but for the import."""
import joblet as joblib
import numpy as np

def my_function(x):
    try:
        result = 1/x # Potential ZeroDivisionError if x == 0
        return result
    except ZeroDivisionError:
        return float('inf')  # Or any other suitable error handling

data = [np.random.rand(1) for _ in range(10)]
data.append(0) # Introducing a potential error case

results = joblib.Parallel(n_jobs=4, backend="threading")(joblib.delayed(my_function)(item) for item in data)

print(results)
